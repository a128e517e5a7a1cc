#pragma once
// Token datasets: a folder of token shards (raw little-endian uint16 or uint32) described by manifest.json,
// memory-mapped, and a deterministic, rank-aware, resumable batch loader with background prefetch.
//
// Windows: window w covers global token positions [w*seq_len, w*seq_len + seq_len + 1): inputs are its first
// seq_len tokens and targets the last seq_len, so every token but the first is a target exactly once per epoch.
// Order: an endless stream of per-epoch permutations of the windows (seeded); stream index i belongs to step
// i / (batch_size * world_size), rank (i / batch_size) % world_size. A loader's whole state is its step count.
#include <ATen/core/Tensor.h>

#include "librho/data/manifest.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace rho {

class MappedFile;

class TokenDataset {
 public:
  // Opens dir/manifest.json and maps every shard; checks each shard's size against the manifest.
  // verify_checksums re-hashes every shard now; otherwise each shard is hashed the first time read() touches it,
  // so a corrupt shard is named (rho::Error) before any of its tokens is used, whoever reads it.
  static TokenDataset open(const std::string& dir, bool verify_checksums = false);
  const TokenManifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  // Identity of this dataset: sha256 of its manifest.json bytes (the manifest holds every shard's hash).
  const std::string& hash() const { return hash_; }
  int64_t num_tokens() const { return total_; }
  // Tokens [start, start+length) as int64, crossing shard boundaries as needed.
  at::Tensor slice(int64_t start, int64_t length) const;
  // The same tokens written to `out` (length int64s): how batches are filled without an extra copy.
  void read(int64_t start, int64_t length, int64_t* out) const;
  // Shard s's tokens as int64 [num_tokens] and the global position of its first token.
  at::Tensor shard_tokens(size_t s) const;
  int64_t shard_start(size_t s) const { return starts_[s]; }

 private:
  std::string dir_, hash_;
  TokenManifest manifest_;
  std::vector<std::shared_ptr<MappedFile>> maps_;
  std::shared_ptr<std::vector<std::once_flag>> verified_;  // per shard: hashed against the manifest
  void verify_shard(size_t s) const;
  std::vector<int64_t> starts_;  // global position of each shard's first token, plus the total at the end
  int64_t total_ = 0;
  int elem_bytes_ = 2;
};

struct LoaderOptions {
  int64_t seq_len = 256;
  int64_t batch_size = 8;   // per rank
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  int prefetch = 2;         // batches made ahead on a background thread (0: made on the caller's thread)
  bool pin_memory = false;  // pinned host memory for fast, asynchronous copies to CUDA
};

struct Batch {
  at::Tensor tokens;     // [batch, seq_len + 1] int64
  at::Tensor positions;  // [batch, seq_len + 1] int64: global position of each token in the dataset
  int64_t step = 0;      // the loader step that produced it
  at::Tensor inputs() const { return tokens.narrow(1, 0, tokens.size(1) - 1); }
  at::Tensor targets() const { return tokens.narrow(1, 1, tokens.size(1) - 1); }
  at::Tensor target_positions() const { return positions.narrow(1, 1, positions.size(1) - 1); }
};

// The targets that count in a loss, [batch, seq] bool, from the inputs (on any device): with exclude_boundary,
// not a target right after an EOS (a document's first token, predicted across the boundary from the previous
// document); otherwise every target. eos_id < 0: no EOS, every target.
at::Tensor valid_targets(const at::Tensor& inputs, int64_t eos_id, bool exclude_boundary = true);

class BatchLoader {
 public:
  BatchLoader(std::shared_ptr<const TokenDataset> data, LoaderOptions options);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;
  Batch next();
  int64_t step() const;        // number of batches handed out so far: the loader's checkpointable state
  void seek(int64_t step);     // continue as if `step` batches had been handed out
  int64_t windows_per_epoch() const;
  // The batch a loader would hand out at `step`, computed directly (no state; used by next()).
  Batch make_batch(int64_t step) const;

 private:
  struct Prefetcher;
  struct Permutations;
  std::shared_ptr<const std::vector<uint32_t>> permutation(int64_t epoch) const;  // window order of an epoch
  std::shared_ptr<const TokenDataset> data_;
  LoaderOptions opt_;
  std::unique_ptr<Permutations> perms_;
  int64_t step_ = 0;
  std::unique_ptr<Prefetcher> prefetcher_;
};

}  // namespace rho
