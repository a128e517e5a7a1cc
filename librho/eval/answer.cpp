#include "librho/eval/answer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

namespace rho {
namespace {
bool digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// The first number after the last occurrence of `marker` (ASCII, lower case), if there is one.
std::optional<std::string> number_after(std::string_view text, const std::string& marker) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const auto at = lower.rfind(marker);
  if (at == std::string::npos) return std::nullopt;
  auto nums = find_numbers(text.substr(at + marker.size()));
  if (nums.empty()) return std::nullopt;
  return nums.front();
}
}  // namespace

std::vector<std::string> find_numbers(std::string_view s) {
  std::vector<std::string> out;
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (!digit(s[i])) {
      ++i;
      continue;
    }
    const size_t b = i;
    size_t e = i;
    while (e < n && digit(s[e])) ++e;
    // Thousands groups only after a 1-3 digit lead and only as exactly three digits, so "3,4,5" stays a list.
    if (e - b <= 3)
      while (e + 3 < n && s[e] == ',' && digit(s[e + 1]) && digit(s[e + 2]) && digit(s[e + 3]) &&
             (e + 4 == n || !digit(s[e + 4])))
        e += 4;
    if (e + 1 < n && s[e] == '.' && digit(s[e + 1])) {
      ++e;
      while (e < n && digit(s[e])) ++e;
    }
    size_t start = b;
    if (start > 0 && s[start - 1] == '$') --start;
    if (start > 0 && s[start - 1] == '-' && (start == 1 || !std::isalnum(static_cast<unsigned char>(s[start - 2]))))
      --start;
    out.emplace_back(s.substr(start, e - start));
    i = e;
  }
  return out;
}

std::string extract_answer(std::string_view text) {
  if (auto a = number_after(text, "####")) return *a;
  if (auto a = number_after(text, "the answer is")) return *a;
  auto nums = find_numbers(text);
  return nums.empty() ? std::string() : nums.back();
}

std::optional<double> parse_number(std::string_view answer) {
  std::string s;
  for (char c : trim(answer))
    if (c != '$' && c != ',') s += c;
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (s.empty()) return std::nullopt;
  // strtod also reads "inf", "nan" and hex floats: only plain decimal numbers are answers.
  const size_t lead = s[0] == '-' || s[0] == '+' ? 1 : 0;
  if (lead == s.size() || !(digit(s[lead]) || s[lead] == '.')) return std::nullopt;
  for (size_t i = lead; i < s.size(); ++i) {
    const char c = s[i];
    const bool exponent_sign = (c == '-' || c == '+') && (s[i - 1] == 'e' || s[i - 1] == 'E');
    if (!(digit(c) || c == '.' || c == 'e' || c == 'E' || exponent_sign)) return std::nullopt;
  }
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::string normalize_answer(std::string_view answer) {
  const auto v = parse_number(answer);
  if (!v) return std::string(trim(answer));
  if (*v == std::floor(*v) && std::fabs(*v) < 1e15) return fmt::format("{}", static_cast<int64_t>(*v));
  return fmt::format("{}", *v);
}

bool answers_match(std::string_view predicted, std::string_view gold) {
  const auto p = parse_number(predicted), g = parse_number(gold);
  if (p && g) return std::fabs(*p - *g) <= 1e-9 * std::max({1.0, std::fabs(*p), std::fabs(*g)});
  if (p || g) return false;
  const auto tp = trim(predicted);
  return !tp.empty() && tp == trim(gold);
}

}  // namespace rho
