#include "librho/util/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

#include "librho/util/error.h"

namespace rho {
namespace {
[[noreturn]] void fail(int rc, const std::string& what) {
  PCRE2_UCHAR msg[256];
  pcre2_get_error_message(rc, msg, sizeof msg);
  throw Error(fmt::format("{}: {}", what, reinterpret_cast<const char*>(msg)));
}

// One match at or after `pos`: true with the ovector filled, false when there is none.
bool match_at(pcre2_code* code, pcre2_match_data* md, const std::string& s, size_t pos) {
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, 0, md, nullptr);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) fail(rc, "text that cannot be matched (invalid UTF-8?)");
  return true;
}

size_t next_char(const std::string& s, size_t pos) {
  ++pos;
  while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
  return pos;
}

struct MatchData {
  explicit MatchData(pcre2_code* code) : md(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchData() { pcre2_match_data_free(md); }
  pcre2_match_data* md;
};
}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) {
  int err = 0;
  PCRE2_SIZE off = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                        &off, nullptr);
  if (!code_) fail(err, fmt::format("{}: regex {} does not compile at offset {}", where, pattern, off));
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when unavailable
}

Regex::~Regex() { pcre2_code_free(code_); }

std::vector<std::pair<size_t, size_t>> Regex::matches(const std::string& s) const {
  std::vector<std::pair<size_t, size_t>> out;
  MatchData m(code_);
  size_t pos = 0;
  while (pos <= s.size() && match_at(code_, m.md, s, pos)) {
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.md);
    if (ov[1] == ov[0]) {  // an empty match: step one UTF-8 character on
      pos = next_char(s, pos);
      continue;
    }
    out.emplace_back(ov[0], ov[1]);
    pos = ov[1];
  }
  return out;
}

std::optional<std::vector<std::string>> Regex::search(const std::string& s, size_t from) const {
  MatchData m(code_);
  if (from > s.size() || !match_at(code_, m.md, s, from)) return std::nullopt;
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.md);
  std::vector<std::string> groups;
  for (uint32_t g = 0; g < pcre2_get_ovector_count(m.md); ++g)
    groups.push_back(ov[2 * g] == PCRE2_UNSET ? std::string() : s.substr(ov[2 * g], ov[2 * g + 1] - ov[2 * g]));
  return groups;
}

std::string Regex::replace_all(const std::string& s, const std::string& replacement) const {
  MatchData m(code_);
  std::string out;
  size_t pos = 0, copied = 0;
  while (pos <= s.size() && match_at(code_, m.md, s, pos)) {
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.md);
    const uint32_t groups = pcre2_get_ovector_count(m.md);
    out.append(s, copied, ov[0] - copied);
    for (size_t i = 0; i < replacement.size(); ++i) {
      const char c = replacement[i];
      if (c == '\\' && i + 1 < replacement.size() && replacement[i + 1] >= '1' && replacement[i + 1] <= '9') {
        const uint32_t g = static_cast<uint32_t>(replacement[++i] - '0');
        if (g < groups && ov[2 * g] != PCRE2_UNSET) out.append(s, ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
      } else {
        out += c;
      }
    }
    copied = ov[1];
    if (ov[1] == ov[0]) {  // an empty match: keep the next character and step past it
      if (ov[1] >= s.size()) break;
      const size_t next = next_char(s, ov[1]);
      out.append(s, ov[1], next - ov[1]);
      copied = pos = next;
    } else {
      pos = ov[1];
    }
  }
  if (copied < s.size()) out.append(s, copied, std::string::npos);
  return out;
}

}  // namespace rho
