#include "librho/eval/judge.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "librho/eval/latex_expr.h"
#include "librho/util/regex.h"
#include "librho/util/text.h"

namespace rho {
namespace {
std::string without(std::string s, const std::string& chars) {
  std::string out;
  for (char c : s)
    if (chars.find(c) == std::string::npos) out += c;
  return out;
}

// Python's float(): optional spaces, sign, digits with '.', an exponent, inf/nan; '_' only between digits; values
// past the double range are infinite (or 0), as Python's are.
std::optional<double> python_float(std::string s) {
  s = trim(s);
  if (s.empty() || s.find_first_of("xXpP") != std::string::npos) return std::nullopt;  // no hex floats
  std::string digits;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '_') {
      digits += s[i];
      continue;
    }
    if (i == 0 || i + 1 == s.size() || !std::isdigit(static_cast<unsigned char>(s[i - 1])) ||
        !std::isdigit(static_cast<unsigned char>(s[i + 1])))
      return std::nullopt;
  }
  char* end = nullptr;
  const double v = std::strtod(digits.c_str(), &end);
  if (end != digits.c_str() + digits.size()) return std::nullopt;
  return v;
}

bool isclose(double a, double b) { return std::abs(a - b) <= 1e-4 * std::max(std::abs(a), std::abs(b)); }

// Rows of a matrix written \begin{pmatrix} ... \end{pmatrix}, each split at '&'.
std::vector<std::vector<std::string>> matrix_rows(const std::string& m) {
  const size_t open = std::string("\\begin{pmatrix}").size(), close = std::string("\\end{pmatrix}").size();
  std::vector<std::vector<std::string>> rows;
  for (const auto& line : split(m.substr(open, m.size() - open - close), "\\\\"))
    if (!trim(line).empty()) rows.push_back(split(trim(line), "&"));
  return rows;
}

bool is_matrix(const std::string& s) {
  return (starts_with(s, "\\begin{pmatrix}") || starts_with(s, "\\begin{bmatrix}")) &&
         (ends_with(s, "\\end{pmatrix}") || ends_with(s, "\\end{bmatrix}"));
}

// The harness's str_to_pmatrix: each "{a,b}" of a reference written as sets becomes a one-row pmatrix.
std::string set_to_pmatrix(const std::string& s) {
  static const Regex braces(R"(\{.*,.*\})");
  std::vector<std::string> out;
  for (const auto& [b, e] : braces.matches(trim(s))) {
    std::string m = trim(s).substr(b, e - b);
    while (!m.empty() && (m.front() == '{' || m.front() == '}')) m.erase(0, 1);
    while (!m.empty() && (m.back() == '{' || m.back() == '}')) m.pop_back();
    std::string body;
    for (char c : m) body += c == ',' ? std::string("\\") : std::string(1, c);
    out.push_back("\\begin{pmatrix}" + body + "\\end{pmatrix}");
  }
  return fmt::format("{}", fmt::join(out, ", "));
}

// Python's s[1:-1]: without the first character (an ASCII bracket here) and the last one, however many bytes it has.
std::string inner(const std::string& s) {
  size_t end = s.size();
  if (end > 1) {
    --end;
    while (end > 1 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  }
  return end > 1 ? s.substr(1, end - 1) : std::string();
}

size_t count_char(const std::string& s, char c) { return static_cast<size_t>(std::count(s.begin(), s.end(), c)); }

}  // namespace

std::optional<double> parse_digits(const std::string& text) {
  const std::string num = without(text, ",");
  if (auto v = python_float(num)) return v;
  if (ends_with(num, "%")) {
    std::string n = num.substr(0, num.size() - 1);
    if (ends_with(n, "\\")) n.pop_back();
    if (auto v = python_float(n)) return *v / 100;
  }
  return std::nullopt;
}

namespace {
// Both numbers (parse_digits): equal within relative 1e-4, the reference also read as a percentage either way.
// nullopt when either is not a number.
std::optional<bool> numbers_equal(const std::string& prediction, const std::string& reference) {
  const auto p = parse_digits(prediction), r = parse_digits(reference);
  if (!p || !r) return std::nullopt;
  for (double item : {*r / 100, *r, *r * 100})
    if (isclose(*p, item)) return true;
  return false;
}

// The same text, case aside, without braces and parentheses; when the prediction is bracketed and the reference is
// not bracketed the other way, both without their leading and trailing brackets.
bool same_text(const std::string& prediction, const std::string& reference) {
  std::string pred_str = prediction, ref_str = reference;
  if ((starts_with(prediction, "[") && ends_with(prediction, "]") && !starts_with(reference, "(")) ||
      (starts_with(prediction, "(") && ends_with(prediction, ")") && !starts_with(reference, "["))) {
    auto strip_brackets = [](const std::string& s) {
      const auto b = s.find_first_not_of("[]()");
      if (b == std::string::npos) return std::string();
      return s.substr(b, s.find_last_not_of("[]()") - b + 1);
    };
    pred_str = strip_brackets(pred_str);
    ref_str = strip_brackets(ref_str);
  }
  return ascii_lower(without(pred_str, "{}()")) == ascii_lower(without(ref_str, "{}()"));
}

// Tuples and intervals, part by part (the harness's pattern: an opening bracket, then a closing one later).
bool parts_equal(const std::string& prediction, const std::string& reference) {
  static const Regex bracketed(R"(^(\(|\[).+(\)|\]))");
  if (!bracketed.search(prediction) || !bracketed.search(reference)) return false;
  const auto p = split(inner(prediction), ","), r = split(inner(reference), ",");
  if (p.size() != r.size()) return false;
  for (size_t i = 0; i < p.size(); ++i)
    if (!math_equal(p[i], r[i])) return false;
  return true;
}

// Matrices of the same shape, entry by entry.
bool matrices_equal(const std::string& prediction, const std::string& reference) {
  if (!is_matrix(prediction) || !is_matrix(reference)) return false;
  const auto p = matrix_rows(prediction), r = matrix_rows(reference);
  if (p.size() != r.size()) return false;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i].size() != r[i].size()) return false;
    for (size_t j = 0; j < p[i].size(); ++j)
      if (!math_equal(p[i][j], r[i][j])) return false;
  }
  return true;
}

// Two equations (lhs - rhs equal, or opposite), or an equation whose left side is a short name ("x = 3") against
// a plain value, either way round.
bool equations_equal(const std::string& prediction, const std::string& reference) {
  const size_t pe = count_char(prediction, '='), re = count_char(reference, '=');
  if (pe == 1 && re == 1) {
    const auto p = split(prediction, "="), r = split(reference, "=");
    const std::string pd = trim(p[0]) + " - (" + trim(p[1]) + ")", rd = trim(r[0]) + " - (" + trim(r[1]) + ")";
    return symbolic_equal(pd, rd) || symbolic_equal("-(" + pd + ")", rd);
  }
  if (pe == 1 && utf8_length(trim(split(prediction, "=")[0])) <= 2 && re == 0)
    return math_equal(split(prediction, "=")[1], reference);
  if (re == 1 && utf8_length(trim(split(reference, "=")[0])) <= 2 && pe == 0)
    return math_equal(prediction, split(reference, "=")[1]);
  return false;
}
}  // namespace

// The harness's math_equal, its rules in its order.
bool math_equal(const std::string& prediction_in, const std::string& reference_in) {
  if (prediction_in.empty()) return false;
  if (prediction_in == reference_in) return true;
  if (const auto numbers = numbers_equal(prediction_in, reference_in)) return *numbers;
  const std::string prediction = trim(prediction_in);
  std::string reference = trim(reference_in);
  if (prediction.find("pmatrix") != std::string::npos && reference.find("pmatrix") == std::string::npos)
    reference = set_to_pmatrix(reference);
  return same_text(prediction, reference) || parts_equal(prediction, reference) ||
         matrices_equal(prediction, reference) || equations_equal(prediction, reference) ||
         symbolic_equal(prediction, reference);
}

}  // namespace rho
