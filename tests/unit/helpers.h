#pragma once
// Shared test helpers: scratch directories, the source tree, and CUDA skipping.
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

namespace rho::test {

// A fresh directory under the build's temp area, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir();
  ~TempDir();
  std::string str(const std::string& child = "") const { return child.empty() ? path.string() : (path / child).string(); }
};

std::string source_path(const std::string& relative);  // a file of the source tree

// For tests tagged [cuda]: false (and a printed reason) when no CUDA device is present.
bool cuda_or_skip();

}  // namespace rho::test

#include <cstdint>
#include <vector>

#include "librho/model/config.h"

namespace rho::test {
// The unit tests' model: 2 layers, hidden 32, 4 heads sharing 2 KV heads; tests change what they exercise.
LlamaConfig tiny_llama(int64_t vocab_size, int64_t max_position_embeddings);
// Writes a token dataset (uint16 shards of at most shard_tokens, manifest.json) from documents of token ids,
// each followed by `eos`. The tokenizer hash is a fixed stand-in.
void write_token_dataset(const std::string& dir, const std::vector<std::vector<int64_t>>& docs, int64_t shard_tokens,
                         int64_t vocab_size, int64_t eos);
// Documents with learnable structure: arithmetic progressions mod (vocab - 1), offset past the EOS id 0.
std::vector<std::vector<int64_t>> pattern_documents(int64_t count, int64_t vocab_size, uint64_t seed);
}  // namespace rho::test
