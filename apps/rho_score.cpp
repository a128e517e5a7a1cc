// rho_score: reference losses for every token of a dataset (stage 2 of Rho-1).
//   rho_score --model MODEL --data TOKENS_DIR --out LOSSES_DIR [--seq-len N] [--stride S] [--batch-size B]
// MODEL: a Hugging Face directory, a librho checkpoint directory, or a rho_pretrain run directory.
// Shards are split between processes by RANK / WORLD_SIZE (torchrun, or SLURM_PROCID / SLURM_NTASKS under srun):
// no process group, since ranks share nothing but the output folder, where the last to finish writes the manifest.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <iostream>


#include "librho/dist/context.h"
#include "librho/train/checkpoint.h"
#include "librho/score/token_scorer.h"
#include "librho/util/device.h"
#include "librho/util/host_memory.h"

int main(int argc, char** argv) {
  CLI::App app{"librho token scoring: per-token reference losses"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::string model_dir, data_dir, out_dir, device = "auto";
  rho::ScoreOptions opt;
  app.add_option("--model", model_dir, "reference model: Hugging Face, checkpoint or run directory")->required();
  app.add_option("--data", data_dir, "token dataset (rho_tokenize output)")->required();
  app.add_option("--out", out_dir, "output loss dataset folder")->required();
  app.add_option("--seq-len", opt.seq_len,
                 "window length (use the training seq_len for aligned contexts); default: 2048 or the model's "
                 "max_position_embeddings if smaller");
  app.add_option("--stride", opt.stride, "window stride; 0 = seq-len (aligned); smaller = more context");
  app.add_option("--batch-size", opt.batch_size, "windows per forward pass");
  app.add_option("--dtype", opt.dtype, "stored loss dtype: float32 or bfloat16");
  std::string precision = "auto";
  app.add_option("--precision", precision,
                 "how the model runs: auto (autocast on CUDA, fp32 on CPU), autocast (training's bf16 recipe), bf16 "
                 "(all bf16: fastest, losses off training's by rounding) or fp32");
  app.add_option("--rows-per-chunk", opt.rows_per_chunk, "logit rows materialised at once");
  app.add_option("--device", device, "auto, cpu or cuda");
  int64_t kill_after = 0;
  // Tests only: SIGKILL this process once N shards are durable, to exercise resuming at a known point.
  app.add_option("--test-kill-after-shards", kill_after)->group("");
  CLI11_PARSE(app, argc, argv);
  if (kill_after > 0)
    opt.on_shard_committed = [kill_after](int64_t n) {
      if (n >= kill_after) std::raise(SIGKILL);
    };
  try {
    const auto env = rho::DistEnv::from_env();
    opt.rank = env.rank;
    opt.world_size = env.world_size;
    auto model = rho::load_model(model_dir);
    if (!app.count("--seq-len")) opt.seq_len = std::min<int64_t>(opt.seq_len, model->config.max_position_embeddings);
    const auto hash = model->weights_sha256();
    const bool cuda = rho::resolve_device(device).is_cuda();
    if (!cuda) rho::keep_host_heap();  // CPU runs reuse their tensors' memory (librho/util/host_memory.h)
    opt.precision = rho::prepare_scoring_model(*model, cuda ? env.cuda_device() : at::Device(at::kCPU),
                                               rho::parse_score_precision(precision));
    auto data = rho::TokenDataset::open(data_dir);
    rho::TokenScorer scorer(model, hash, opt);
    const auto summary = scorer.score_dataset(data, out_dir);
    std::cout << summary.to_string();
    std::cout << (summary.manifest_written ? "manifest written: " + out_dir + "/manifest.json\n"
                                           : "other ranks still running; the last to finish writes the manifest\n");
  } catch (const std::exception& e) {
    std::cerr << "\nrho_score: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
