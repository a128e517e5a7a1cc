// Peak host memory of TokenScorer's chunked per-token loss against the naive path (full fp32 logits, then
// cross-entropy), on a 32k-vocabulary model at batch 8 x 2048. Each path runs in a fresh process (this
// binary again, with --mode) so that the peak resident set sizes do not mix. Prints JSON.
//   bench_score_memory [--batch 8] [--seq 2048] [--vocab 32000] [--hidden 128]
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "bench/bench_common.h"
#include "librho/model/llama.h"

namespace {

// Runs this binary in one mode and reads back "growth_bytes seconds".
std::pair<double, double> run_mode(const std::string& self, const std::string& mode, const std::string& args) {
  double grow = -1, secs = -1;
  try {
    std::istringstream in(rho::bench::run_capture(self + " --mode " + mode + args));
    if (!(in >> grow >> secs)) grow = secs = -1;
  } catch (const std::exception&) {
  }
  return {grow, secs};
}

}  // namespace

constexpr const char* kUsage =
    "bench_score_memory [--batch 8] [--seq 2048] [--vocab 32000] [--hidden 128]\n"
    "Peak host memory of TokenScorer's chunked per-token loss against full logits then cross-entropy.\n";

int main(int argc, char** argv) {
  const rho::bench::Args a(argc, argv, kUsage);
  const int64_t batch = a.num("batch", 8), seq = a.num("seq", 2048), vocab = a.num("vocab", 32000),
                hidden = a.num("hidden", 128);
  const std::string mode = a.str("mode", "");
  const std::string args = a.pass_on("mode");
  if (mode.empty()) {
    const auto chunked = run_mode(argv[0], "chunked", args);
    const auto naive = run_mode(argv[0], "naive", args);
    const double logits_bytes = 4.0 * batch * seq * vocab;
    std::printf(
        "{\"bench\": \"score_memory\", \"device\": \"cpu\", \"batch\": %ld, \"seq\": %ld, \"vocab\": %ld, "
        "\"hidden\": %ld, \"full_fp32_logits_bytes\": %.0f, \"chunked_peak_growth_bytes\": %.0f, "
        "\"naive_peak_growth_bytes\": %.0f, \"chunked_over_logits\": %.3f, \"chunked_seconds\": %.2f, "
        "\"naive_seconds\": %.2f}\n",
        (long)batch, (long)seq, (long)vocab, (long)hidden, logits_bytes, chunked.first, naive.first,
        chunked.first / logits_bytes, chunked.second, naive.second);
    return chunked.first >= 0 && chunked.first < logits_bytes ? 0 : 1;
  }

  rho::LlamaConfig c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = hidden * 3;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_position_embeddings = seq;
  rho::Llama model(c);
  model->eval();
  const auto tokens = at::randint(0, vocab, {batch, seq + 1});
  const auto x = tokens.narrow(1, 0, seq), y = tokens.narrow(1, 1, seq);
  c10::InferenceMode guard;
  const rho::bench::PeakMemory peak(at::kCPU);
  const rho::bench::Timer timer;
  at::Tensor loss;
  if (mode == "chunked") {
    loss = model->token_loss(x, y, 1024);  // what TokenScorer runs
  } else {
    auto logits = model->forward(x).to(at::kFloat);
    loss = at::cross_entropy_loss(logits.view({-1, vocab}), y.reshape(-1), {}, at::Reduction::None);
  }
  std::printf("%.0f %.3f\n", peak.bytes(), timer.seconds());
  return 0;
}
