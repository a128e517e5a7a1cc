#pragma once
// Training checkpoints: out_dir/checkpoints/step-NNNNNNNN/ holding model.safetensors, optimizer.safetensors
// and state.json (step, loader position, tokens seen, RNG state, sha256 of each file). Written into a
// temporary directory and renamed, so a crash leaves either the whole checkpoint or none; checksums are
// verified on load; only the newest keep_last are kept.
#include <ATen/core/Tensor.h>

#include "librho/dist/sharding.h"
#include "librho/model/llama.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rho {

struct CheckpointState {
  int64_t step = 0;         // optimizer steps completed
  int64_t loader_step = 0;  // batches the loader had handed out
  int64_t tokens_seen = 0;
  int64_t world_size = 1;
  int64_t handoff_step = -1;  // the step after which slm.handoff took over (-1: it has not)
  std::string config_yaml;  // the resolved config of the run that wrote it
  std::string model_config_json;  // the model's shape (config.json form), so the checkpoint loads on its own
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// A sharded checkpoint's layout (train.sharding other than none): the weights and AdamW state are not in
// model.safetensors / optimizer.safetensors but split over shard-RRRRR-of-WWWWW.safetensors, one per rank, each
// holding that rank's part of every unit (ShardedModel::shard_state). Any world size can read it back.
struct CheckpointSharding {
  Sharding level = Sharding::None;       // None: an unsharded checkpoint
  int64_t world_size = 1;
  std::vector<ShardedUnitLayout> units;
  std::vector<std::string> shard_sha256;  // per rank
  static std::string shard_file(int64_t rank, int64_t world);
};

struct Checkpoint {
  CheckpointState state;
  NamedTensors model;      // the parameters, by name
  NamedTensors optimizer;  // AdamW's state (AdamW::state())
  at::Tensor rng_cpu;      // the default CPU generator's state (undefined: none)
  CheckpointSharding sharding;  // level None: model and optimizer hold everything
  NamedTensors reference;  // SLM's reference state (ReferenceSource::state(): "ema.<parameter>"; after a handoff
                           // to a self-reference, its moving average as "handoff.ema.<parameter>")
  // On disk all but the model share optimizer.safetensors, under "rng.cpu" and their own names.
};

std::string checkpoint_dir(const std::string& out_dir, int64_t step);
void save_checkpoint(const std::string& out_dir, const Checkpoint& ckpt, int64_t keep_last);

// Writing a sharded checkpoint is collective, in three parts with barriers between them: rank 0 begins (clears
// leftovers, makes the temporary directory every rank writes into), every rank writes its shard (returning its
// sha256), and rank 0 commits: state.json with every shard's checksum, then the rename that makes it complete.
// `ckpt` (rank 0's) holds the state, RNG and reference; ckpt.sharding the layout and checksums.
std::string sharded_checkpoint_tmp(const std::string& out_dir, int64_t step);
void begin_sharded_checkpoint(const std::string& out_dir, int64_t step);
std::string write_checkpoint_shard(const std::string& out_dir, int64_t step, int64_t rank, int64_t world,
                                   const NamedTensors& shard);
void commit_sharded_checkpoint(const std::string& out_dir, const Checkpoint& ckpt, int64_t keep_last);
// Rank q's shard of a loaded sharded checkpoint, its checksum verified.
NamedTensors read_checkpoint_shard(const std::string& dir, const Checkpoint& ckpt, int64_t q);
// The complete checkpoints under out_dir, oldest first, and the newest, if any.
std::vector<std::string> list_checkpoints(const std::string& out_dir);
std::optional<std::string> latest_checkpoint(const std::string& out_dir);
// Loads and verifies (sha256 of both tensor files against state.json); throws rho::Error naming the file.
Checkpoint load_checkpoint(const std::string& dir);

// Copies a checkpoint's model tensors into `model` (a sharded checkpoint's are assembled from its shards); every parameter must be there with its shape.
void load_model_weights(LlamaImpl& model, const Checkpoint& ckpt, const std::string& dir);
// The model a loaded checkpoint (read from `dir`) holds: its shape from state.json, its weights.
Llama model_from_checkpoint(const Checkpoint& ckpt, const std::string& dir);

// A model from any of: a Hugging Face directory (config.json), a checkpoint directory (state.json), or a run
// directory (its newest checkpoint). Weights are fp32 on CPU.
Llama load_model(const std::string& path);

}  // namespace rho
