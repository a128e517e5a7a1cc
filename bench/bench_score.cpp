// librho's side of bench_score.py: TokenScorer over a token dataset, set up exactly as rho_score does
// (--precision auto: training's bf16 autocast recipe on CUDA, fp32 on CPU; or autocast, bf16, fp32), timed after a one-batch warm-up. Peak memory counts from before the model is
// loaded (weights included). Writes the losses (float32, one per position) to --out for the Python side to
// compare, and prints one JSON line.
// --profile PATH: after the timed run, one batch under the Kineto profiler, saved as a Chrome trace.
//   bench_score --model HF_DIR --data TOKENS_DIR --out losses.f32 [--seq 2048] [--batch 8] [--device cpu|cuda] [--precision P] [--profile trace.json]
#include <torch/cuda.h>

#include <nlohmann/json.hpp>

#include "bench/bench_profile.h"
#include "librho/score/token_scorer.h"
#include "librho/train/checkpoint.h"
#include "librho/util/files.h"
#include "librho/util/host_memory.h"

constexpr const char* kUsage =
    "bench_score --model HF_DIR --data TOKENS_DIR --out losses.f32 [--seq 2048] [--batch 8] [--device cpu|cuda]\n"
    "            [--precision auto|autocast|bf16|fp32] [--profile trace.json]\n"
    "librho's side of bench/bench_score.py (run that).\n";

int main(int argc, char** argv) {
  const rho::bench::Args a(argc, argv, kUsage);
  const at::Device dev(a.str("device", "cpu"));
  if (dev.is_cpu()) rho::keep_host_heap();  // as the tools run (librho/util/host_memory.h)
  rho::ScoreOptions opt;
  opt.seq_len = a.num("seq", 2048);
  opt.batch_size = a.num("batch", 8);
  opt.progress = false;
  const rho::bench::PeakMemory peak(dev);
  auto model = rho::load_model(a.str("model", ""));
  opt.precision = rho::prepare_scoring_model(*model, dev, rho::parse_score_precision(a.str("precision", "auto")));
  const auto data = rho::TokenDataset::open(a.str("data", ""));
  rho::TokenScorer scorer(model, "bench", opt);
  scorer.score_range(data, 0, opt.batch_size * opt.seq_len + 1);  // warm-up: one batch of windows
  rho::bench::sync(dev);
  const rho::bench::Timer timer;
  const auto losses = scorer.score_range(data, 0, data.num_tokens());
  const double secs = timer.seconds();
  if (a.has("profile"))
    rho::bench::profile_to(a.str("profile", ""), dev,
                           [&] { scorer.score_range(data, 0, opt.batch_size * opt.seq_len + 1); });
  rho::write_file_atomic(a.str("out", ""), losses.data_ptr(), losses.numel() * sizeof(float));
  const int64_t scored = data.num_tokens() - 1;  // every position but the first has a loss
  const nlohmann::json out = {{"tokens", scored},
                              {"seconds", secs},
                              {"tokens_per_s", scored / secs},
                              {"peak_bytes", peak.bytes()},
                              {"rows_per_chunk", opt.rows_per_chunk},
                              {"precision", rho::to_string(opt.precision)}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
