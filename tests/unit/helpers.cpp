#include "helpers.h"

#include <torch/cuda.h>
#include <unistd.h>

#include <atomic>
#include <iostream>

namespace rho::test {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path = std::filesystem::temp_directory_path() / ("rho_test_" + std::to_string(::getpid()) + "_" +
                                                   std::to_string(counter++));
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string source_path(const std::string& relative) { return std::string(RHO_SOURCE_DIR) + "/" + relative; }

bool cuda_or_skip() {
  if (torch::cuda::is_available()) return true;
  WARN("SKIPPED: no CUDA device on this machine (test tagged [cuda])");
  std::cout << "SKIPPED [cuda]: no CUDA device\n";
  return false;
}

}  // namespace rho::test

#include <random>

#include "librho/data/token_dataset.h"
#include "librho/util/files.h"
#include "librho/util/sha256.h"

namespace rho::test {

void write_token_dataset(const std::string& dir, const std::vector<std::vector<int64_t>>& docs, int64_t shard_tokens,
                         int64_t vocab_size, int64_t eos) {
  std::filesystem::create_directories(dir);
  TokenManifest m;
  m.dtype = "uint16";
  m.vocab_size = vocab_size;
  m.tokenizer_name = "test.model";
  m.tokenizer_sha256 = std::string(64, 'a');
  m.eos_id = eos;
  std::vector<uint16_t> cur;
  int64_t docs_in_shard = 0;
  auto flush = [&] {
    if (cur.empty()) return;
    ShardInfo s;
    s.file = "shard-" + std::to_string(m.shards.size()) + ".bin";
    s.num_tokens = static_cast<int64_t>(cur.size());
    s.num_documents = docs_in_shard;
    s.sha256 = sha256_hex(cur.data(), cur.size() * 2);
    write_file_atomic(dir + "/" + s.file, cur.data(), cur.size() * 2);
    m.shards.push_back(s);
    cur.clear();
    docs_in_shard = 0;
  };
  for (const auto& d : docs) {
    for (int64_t t : d) {
      cur.push_back(static_cast<uint16_t>(t));
      if (static_cast<int64_t>(cur.size()) == shard_tokens) flush();
    }
    cur.push_back(static_cast<uint16_t>(eos));
    ++docs_in_shard;
    if (static_cast<int64_t>(cur.size()) == shard_tokens) flush();
  }
  flush();
  write_file_atomic(dir + "/manifest.json", m.to_json());
}

std::vector<std::vector<int64_t>> pattern_documents(int64_t count, int64_t vocab_size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> docs;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t start = rng() % (vocab_size - 1), step = 1 + rng() % 3, len = 20 + rng() % 40;
    std::vector<int64_t> d;
    for (int64_t j = 0; j < len; ++j) d.push_back(1 + (start + j * step) % (vocab_size - 1));
    docs.push_back(d);
  }
  return docs;
}

LlamaConfig tiny_llama(int64_t vocab_size, int64_t max_position_embeddings) {
  LlamaConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_position_embeddings = max_position_embeddings;
  return c;
}

}  // namespace rho::test
