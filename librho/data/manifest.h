#pragma once
// A token dataset's manifest.json: its shards (file, tokens, documents, sha256), the dtype, and the tokenizer's
// name, hash and special ids. Read strictly (every field named in errors) and written by rho_tokenize.
#include <cstdint>
#include <string>
#include <vector>

namespace rho {

struct ShardInfo {
  std::string file;        // relative to the dataset folder
  int64_t num_tokens = 0;
  int64_t num_documents = 0;
  std::string sha256;      // of the shard's bytes
};

struct TokenManifest {
  int format_version = 1;
  std::string dtype;       // "uint16" or "uint32"
  int64_t vocab_size = 0;
  std::string tokenizer_name;    // file name of the SentencePiece model
  std::string tokenizer_sha256;  // hash of the model's bytes: the tokenizer's identity
  int64_t bos_id = -1, eos_id = -1;
  int64_t skipped_documents = 0;  // bad input records left out (rho_tokenize --on-error skip)
  int64_t skipped_files = 0;      // empty input files left out
  std::vector<ShardInfo> shards;
  int64_t num_tokens() const;
  int64_t num_documents() const;
  std::string to_json() const;
  // Throws rho::Error naming `source` and the field on anything missing, mistyped or inconsistent.
  static TokenManifest from_json(const std::string& text, const std::string& source);
};

}  // namespace rho
