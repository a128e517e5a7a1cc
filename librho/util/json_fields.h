#pragma once
// Strict reading of librho's own JSON files (token and loss manifests): every failure names the file and the
// field (`ds/manifest.json: field 'shards[1].sha256': 'abc' is not a lowercase hex sha256`), unknown fields are
// errors, integers are range-checked before narrowing.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "librho/util/error.h"

namespace rho {

inline bool is_sha256(const std::string& s) {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// One object of a JSON Lines file, with "file:line" for messages.
struct JsonLine {
  int64_t line;
  nlohmann::json value;
  std::string source;
};

// The objects of a JSON Lines file (blank lines skipped; limit > 0: the first `limit`). A line that is not a JSON
// object, or a file with none, is an error naming the file and line.
inline std::vector<JsonLine> read_json_lines(const std::string& path, int64_t limit = 0) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  std::vector<JsonLine> items;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    JsonLine it{line, {}, fmt::format("{}:{}", path, line)};
    try {
      it.value = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: not valid JSON ({})", it.source, e.what()));
    }
    if (!it.value.is_object()) throw Error(fmt::format("{}: not a JSON object", it.source));
    items.push_back(std::move(it));
    if (limit > 0 && static_cast<int64_t>(items.size()) == limit) break;
  }
  if (items.empty()) throw Error(fmt::format("{}: no items", path));
  return items;
}

struct JsonFields {
  using json = nlohmann::json;
  const std::string& source;  // the file, for messages

  // The object in `text`, or an error naming the file.
  json parse_object(const std::string& text) const {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}: invalid JSON ({})", source, e.what()));
    }
    if (!j.is_object()) throw Error(fmt::format("{}: not a JSON object", source));
    return j;
  }
  Error error(const std::string& field, const std::string& what) const {
    return Error(fmt::format("{}: field '{}': {}", source, field, what));
  }
  const json& at(const json& obj, const std::string& key, const std::string& field) const {
    auto it = obj.find(key);
    if (it == obj.end()) throw error(field, "missing");
    return *it;
  }
  int64_t integer(const json& obj, const std::string& key, const std::string& field, int64_t lo, int64_t hi) const {
    const json& v = at(obj, key, field);
    if (!v.is_number_integer()) throw error(field, fmt::format("expected an integer, got {}", v.dump()));
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) throw error(field, fmt::format("{} is outside [{}, {}]", x, lo, hi));
    return x;
  }
  std::string string(const json& obj, const std::string& key, const std::string& field) const {
    const json& v = at(obj, key, field);
    if (!v.is_string()) throw error(field, fmt::format("expected a string, got {}", v.dump()));
    return v.get<std::string>();
  }
  std::string sha(const json& obj, const std::string& key, const std::string& field) const {
    auto s = string(obj, key, field);
    if (!is_sha256(s)) throw error(field, fmt::format("'{}' is not a lowercase hex sha256", s));
    return s;
  }
  void only(const json& obj, const std::set<std::string>& keys, const std::string& where) const {
    for (const auto& [k, v] : obj.items())
      if (!keys.count(k)) throw error(where.empty() ? k : where + "." + k, "unknown field");
  }
};

}  // namespace rho
