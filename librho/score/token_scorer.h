#pragma once
// Stage 2 of Rho-1: run the reference model once over a token dataset and store every token's loss.
//
// LossDataset: a folder of per-token losses aligned one-to-one with a TokenDataset's shards (the value at
// global position p is the loss of predicting token p from the tokens before it in its scoring window; NaN
// where there is no context, i.e. position 0), described by its own manifest.json that names the token
// dataset (hash), the tokenizer (hash) and the model (hash) it came from.
//
// Context policy (ScoreOptions::stride): windows of seq_len+1 tokens start every `stride` tokens; a window
// scores only the targets no earlier window scored, so with stride < seq_len every token but the first
// seq_len gets at least seq_len - stride tokens of context. stride == seq_len (the default, "aligned") gives
// exactly the contexts that rho_pretrain's loader sees with the same seq_len, so offline and online
// reference losses agree.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "librho/data/token_dataset.h"
#include "librho/model/llama.h"

namespace rho {

struct LossManifest {
  int format_version = 1;
  std::string dtype;  // float32 | bfloat16
  std::string precision = "unknown";  // how the model ran (ScorePrecision); "unknown" in manifests older than it
  std::string token_dataset_hash, tokenizer_sha256, model_hash;
  int64_t seq_len = 0, stride = 0;
  std::vector<ShardInfo> shards;  // file, num_tokens, sha256 (num_documents unused)
  std::string to_json() const;
  static LossManifest from_json(const std::string& text, const std::string& source);
};

class LossDataset {
 public:
  static LossDataset open(const std::string& dir);
  const LossManifest& manifest() const { return manifest_; }
  // Throws rho::Error unless these losses were scored on `tokens` (same dataset hash and tokenizer).
  void check_matches(const TokenDataset& tokens) const;
  // Losses at the given global positions (any shape, int64) as float32 of the same shape.
  at::Tensor gather(const at::Tensor& positions) const;
  at::Tensor shard_losses(size_t s) const;  // float32 [num_tokens]
  int64_t num_tokens() const { return starts_.back(); }

 private:
  std::string dir_;
  LossManifest manifest_;
  std::vector<std::shared_ptr<MappedFile>> maps_;
  std::vector<int64_t> starts_;
};

// How the reference model runs.
//   autocast: training's recipe (bf16 matmuls under autocast, fp32 embeddings, norms and residual stream), so
//             reference and current losses differ by the model and not by precision. The matmul weights are kept
//             as the bf16 copies autocast would make of them: no more memory than bf16, the same losses.
//   bf16:     every weight and activation in bf16 (fastest; its losses differ from training's by rounding).
//   fp32:     full precision.
//   auto:     autocast on CUDA, fp32 on the CPU (as rho_pretrain's train.precision auto).
enum class ScorePrecision { Auto, Autocast, BF16, FP32 };
ScorePrecision parse_score_precision(const std::string& s);  // auto | autocast | bf16 | fp32
std::string to_string(ScorePrecision p);
// Moves `model` to `device` in the form `precision` runs it; returns the precision resolved (never Auto), for
// ScoreOptions::precision.
ScorePrecision prepare_scoring_model(LlamaImpl& model, const at::Device& device, ScorePrecision precision);
// How a model as it is loaded runs: Autocast for prepare_scoring_model's autocast form (fp32 embeddings, bf16
// projections), BF16 for bf16 weights, FP32 otherwise.
ScorePrecision precision_of(const LlamaImpl& model);

struct ScoreOptions {
  int64_t seq_len = 2048;      // rho_score's default: min(2048, the model's max_position_embeddings)
  int64_t stride = 0;          // 0: seq_len (aligned with training windows)
  int64_t batch_size = 8;      // windows per forward pass
  std::string dtype = "float32";  // stored losses
  ScorePrecision precision = ScorePrecision::Auto;  // as prepare_scoring_model left it (Auto: precision_of the model)
  int64_t rank = 0, world_size = 1;  // shards s with s % world_size == rank are this process's
  int64_t rows_per_chunk = 1024;     // logits rows materialised at once (memory bound: rows x vocab x 4 B)
  bool progress = true;
  // Called after each shard's losses and record are durable, with the number this run has written
  // (tests use it to kill the process at a known point).
  std::function<void(int64_t)> on_shard_committed;
};

struct ScoreSummary {
  int64_t shards_scored = 0, shards_skipped = 0, tokens = 0;
  double loss_sum = 0;
  std::vector<int64_t> histogram;  // counts of losses in [0,1), [1,2), ... [11,12), >= 12
  bool manifest_written = false;
  std::string to_string() const;
};

struct LossShardRecord;  // losses-NNNNN.bin.json: what a finished loss shard was scored from and with

class TokenScorer {
 public:
  // `model` is used as it is (device, dtype); `model_hash` identifies it in the output manifest.
  TokenScorer(Llama model, std::string model_hash, ScoreOptions options);
  // Losses of targets [begin, end) of `data` (global positions), float32; NaN at position 0.
  at::Tensor score_range(const TokenDataset& data, int64_t begin, int64_t end);
  // Scores this rank's shards into out_dir (resumable: finished shards are checked and skipped); the last
  // process to finish writes manifest.json.
  ScoreSummary score_dataset(const TokenDataset& data, const std::string& out_dir);

 private:
  at::Tensor score_windows(const at::Tensor& windows);  // [n, len+1] -> losses [n, len]
  void check_can_score(const TokenDataset& data) const;  // vocabulary and window length against the model
  LossShardRecord record_for(const ShardInfo& shard) const;  // what a finished loss shard records
  at::Tensor score_shard(const TokenDataset& data, size_t s, const std::string& bin, LossShardRecord& rec,
                         const std::function<void(int64_t)>& progress);
  bool write_manifest_if_complete(const TokenDataset& data, const std::string& out_dir) const;
  Llama model_;
  std::string model_hash_;
  ScoreOptions opt_;
};

}  // namespace rho
