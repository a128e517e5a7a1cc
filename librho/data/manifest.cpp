#include "librho/data/manifest.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "librho/util/error.h"
#include "librho/util/json_fields.h"

namespace rho {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
constexpr int kManifestVersion = 1;
}  // namespace

int64_t TokenManifest::num_tokens() const {
  int64_t n = 0;
  for (const auto& s : shards) n += s.num_tokens;
  return n;
}

int64_t TokenManifest::num_documents() const {
  int64_t n = 0;
  for (const auto& s : shards) n += s.num_documents;
  return n;
}

std::string TokenManifest::to_json() const {
  nlohmann::ordered_json j;
  j["format_version"] = format_version;
  j["dtype"] = dtype;
  j["vocab_size"] = vocab_size;
  j["tokenizer_name"] = tokenizer_name;
  j["tokenizer_sha256"] = tokenizer_sha256;
  j["bos_id"] = bos_id;
  j["eos_id"] = eos_id;
  j["num_tokens"] = num_tokens();
  j["num_documents"] = num_documents();
  j["skipped_documents"] = skipped_documents;
  j["skipped_files"] = skipped_files;
  j["shards"] = nlohmann::ordered_json::array();
  for (const auto& s : shards)
    j["shards"].push_back(
        {{"file", s.file}, {"num_tokens", s.num_tokens}, {"num_documents", s.num_documents}, {"sha256", s.sha256}});
  return j.dump(2) + "\n";
}

TokenManifest TokenManifest::from_json(const std::string& text, const std::string& source) {
  const JsonFields r{source};
  const json j = r.parse_object(text);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  r.only(j, {"format_version", "dtype", "vocab_size", "tokenizer_name", "tokenizer_sha256", "bos_id", "eos_id",
             "num_tokens", "num_documents", "skipped_documents", "skipped_files", "shards"},
         "");
  TokenManifest m;
  const int64_t version = r.integer(j, "format_version", "format_version", 0, kMax);
  if (version != kManifestVersion)  // compared before narrowing: 2^32 + 1 is not version 1
    throw r.error("format_version",
                  fmt::format("version {} is not supported (this librho reads {})", version, kManifestVersion));
  m.format_version = kManifestVersion;
  m.dtype = r.string(j, "dtype", "dtype");
  if (m.dtype != "uint16" && m.dtype != "uint32")
    throw r.error("dtype", fmt::format("'{}' is not uint16 or uint32", m.dtype));
  m.vocab_size = r.integer(j, "vocab_size", "vocab_size", 1, m.dtype == "uint16" ? 65536 : (int64_t(1) << 32));
  m.tokenizer_name = r.string(j, "tokenizer_name", "tokenizer_name");
  m.tokenizer_sha256 = r.sha(j, "tokenizer_sha256", "tokenizer_sha256");
  m.bos_id = r.integer(j, "bos_id", "bos_id", -1, m.vocab_size - 1);
  m.eos_id = r.integer(j, "eos_id", "eos_id", -1, m.vocab_size - 1);
  m.skipped_documents = r.integer(j, "skipped_documents", "skipped_documents", 0, kMax);
  m.skipped_files = r.integer(j, "skipped_files", "skipped_files", 0, kMax);
  const json& shards = r.at(j, "shards", "shards");
  if (!shards.is_array() || shards.empty()) throw r.error("shards", "expected a non-empty array");
  std::set<std::string> seen;
  int64_t total_tokens = 0;  // checked as it grows: num_tokens() must not overflow
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string where = fmt::format("shards[{}]", i);
    const json& s = shards[i];
    if (!s.is_object()) throw r.error(where, "expected an object");
    r.only(s, {"file", "num_tokens", "num_documents", "sha256"}, where);
    const auto file = r.string(s, "file", where + ".file");
    const fs::path p(file);
    const bool escapes = std::any_of(p.begin(), p.end(), [](const fs::path& c) { return c == ".."; });
    if (file.empty() || p.is_absolute() || escapes)
      throw r.error(where + ".file", fmt::format("'{}' is not a path inside the dataset folder", file));
    if (!seen.insert(file).second) throw r.error(where + ".file", fmt::format("'{}' is listed twice", file));
    const int64_t tokens = r.integer(s, "num_tokens", where + ".num_tokens", 1, kMax - total_tokens);
    total_tokens += tokens;
    const int64_t docs = r.integer(s, "num_documents", where + ".num_documents", 0, tokens);
    m.shards.push_back(ShardInfo{file, tokens, docs, r.sha(s, "sha256", where + ".sha256")});
  }
  const int64_t tokens = r.integer(j, "num_tokens", "num_tokens", 0, kMax);
  if (tokens != m.num_tokens())
    throw r.error("num_tokens", fmt::format("{} differs from the shards' total {}", tokens, m.num_tokens()));
  const int64_t docs = r.integer(j, "num_documents", "num_documents", 0, kMax);
  if (docs != m.num_documents())
    throw r.error("num_documents", fmt::format("{} differs from the shards' total {}", docs, m.num_documents()));
  return m;
}

}  // namespace rho
