// libFuzzer target: the token dataset manifest reader (TokenManifest::from_json).
// Input: manifest.json text. An accepted manifest must be self-consistent (totals, ranges, safe shard paths) and
// survive to_json -> from_json unchanged; a rejection must be a rho::Error naming the source.
#include <filesystem>
#include <string>

#include "fuzz/fuzz_util.h"
#include "librho/data/token_dataset.h"
#include "librho/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using rho_fuzz::check;
  const std::string text(reinterpret_cast<const char*>(data), size);
  rho::TokenManifest m;
  try {
    m = rho::TokenManifest::from_json(text, "fuzz/manifest.json");
  } catch (const rho::Error& e) {
    check(std::string(e.what()).rfind("fuzz/manifest.json: ", 0) == 0, std::string("error not naming the file: ") + e.what());
    return 0;
  }
  check(m.dtype == "uint16" || m.dtype == "uint32", "dtype");
  check(m.vocab_size >= 1 && m.bos_id < m.vocab_size && m.eos_id < m.vocab_size, "vocab and special ids");
  check(!m.shards.empty(), "no shards accepted");
  for (const auto& s : m.shards) {
    const std::filesystem::path p(s.file);
    bool escapes = p.is_absolute() || s.file.empty();
    for (const auto& c : p) escapes |= c == "..";
    check(!escapes, "shard path '" + s.file + "' leaves the dataset folder");
    check(s.num_tokens >= 1 && s.num_documents >= 0 && s.num_documents <= s.num_tokens, "shard counts");
  }
  check(m.num_tokens() >= 1, "total tokens");
  rho::TokenManifest again;
  try {
    again = rho::TokenManifest::from_json(m.to_json(), "fuzz/roundtrip.json");
  } catch (const rho::Error& e) {
    check(false, std::string("to_json of an accepted manifest is rejected: ") + e.what());
  }
  check(again.to_json() == m.to_json(), "to_json -> from_json -> to_json changes the manifest");
  return 0;
}
