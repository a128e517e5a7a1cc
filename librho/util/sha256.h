#pragma once
// SHA-256 (OpenSSL's): the identity of shards, tokenizers and datasets, as lowercase hex.
#include <cstddef>
#include <memory>
#include <string>

namespace rho {

// Incremental hashing for data that arrives in pieces (a shard as it is written).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  std::string hex_digest();  // finishes the hash; update() may not be called afterwards

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string sha256_hex(const void* data, size_t size);
inline std::string sha256_hex(const std::string& bytes) { return sha256_hex(bytes.data(), bytes.size()); }
std::string sha256_file(const std::string& path);  // streams the file; throws rho::Error naming it

}  // namespace rho
