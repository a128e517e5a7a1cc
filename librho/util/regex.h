#pragma once
// Regex: a compiled PCRE2 pattern (UTF-8, Unicode classes: \w, \d, \s and \b as Python's `re` reads them in
// str patterns), JIT-compiled where the platform allows. Used by the tokenizer.json pre-tokenizers and by the
// math answer rules (eval/math_answer.h), which are written as the evaluation harness's Python regexes.
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace rho {

class Regex {
 public:
  // A pattern that does not compile is a rho::Error naming `where`, the pattern and the offset.
  explicit Regex(const std::string& pattern, const std::string& where = "regex");
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // [begin, end) byte ranges of the successive non-empty matches in `s`.
  std::vector<std::pair<size_t, size_t>> matches(const std::string& s) const;

  // The first match at or after byte `from`: its groups' texts (group 0 is the whole match; a group that did
  // not take part is ""), or nullopt.
  std::optional<std::vector<std::string>> search(const std::string& s, size_t from = 0) const;

  // Python's re.sub(pattern, replacement, s): every match replaced; in `replacement`, \1..\9 are groups.
  std::string replace_all(const std::string& s, const std::string& replacement) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
};

}  // namespace rho
