// rho_score: reference losses for every token of a dataset (stage 2 of Rho-1).
//   rho_score --model HF_DIR --data TOKENS_DIR --out LOSSES_DIR [--seq-len N] [--stride S] [--batch-size B]
// Shards are split between processes by RANK / WORLD_SIZE (torchrun, or SLURM_PROCID / SLURM_NTASKS).
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>

#include <torch/cuda.h>

#include "librho/io/hf_checkpoint.h"
#include "librho/score/token_scorer.h"

static int64_t env_int(const char* a, const char* b, int64_t fallback) {
  for (const char* name : {a, b})
    if (const char* v = std::getenv(name)) return std::atoll(v);
  return fallback;
}

int main(int argc, char** argv) {
  CLI::App app{"librho token scoring: per-token reference losses"};
  std::string model_dir, data_dir, out_dir, device = "auto";
  rho::ScoreOptions opt;
  app.add_option("--model", model_dir, "reference model: Hugging Face directory")->required();
  app.add_option("--data", data_dir, "token dataset (rho_tokenize output)")->required();
  app.add_option("--out", out_dir, "output loss dataset folder")->required();
  app.add_option("--seq-len", opt.seq_len, "window length (use the training seq_len for aligned contexts)");
  app.add_option("--stride", opt.stride, "window stride; 0 = seq-len (aligned); smaller = more context");
  app.add_option("--batch-size", opt.batch_size, "windows per forward pass");
  app.add_option("--dtype", opt.dtype, "stored loss dtype: float32 or bfloat16");
  app.add_option("--rows-per-chunk", opt.rows_per_chunk, "logit rows materialised at once");
  app.add_option("--device", device, "auto, cpu or cuda");
  CLI11_PARSE(app, argc, argv);
  opt.rank = env_int("RANK", "SLURM_PROCID", 0);
  opt.world_size = env_int("WORLD_SIZE", "SLURM_NTASKS", 1);
  try {
    auto model = rho::load_hf_model(model_dir);
    const auto hash = model->weights_sha256();
    const bool cuda = device == "cuda" || (device == "auto" && torch::cuda::is_available());
    if (cuda) model->to(at::Device(at::kCUDA), at::kBFloat16);  // bf16 weights, fp32 loss per chunk
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
