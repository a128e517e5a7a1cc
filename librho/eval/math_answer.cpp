#include "librho/eval/math_answer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <utility>
#include <cmath>
#include <map>
#include <memory>
#include <vector>

#include "librho/util/regex.h"
#include "librho/util/text.h"

namespace rho {
namespace {
// Units and other words the harness removes when they stand alone (MathQA's answers carry many); each is also
// removed with an "s" after it. Written as regexes, as the harness writes them ("q ." matches "q" and any one
// character after a space).
const char* const kUnitWords[] = {
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .", "monkey", "prime",
    "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab", "way", "west",
    "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h", "no change", "men", "soldier", "pie", "bc",
    "excess", "st", "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise", "a . m", "th", "π r 2",
    "sq", "mark", "l", "toy", "coin", "sq . m", "gallon", "° f", "profit", "minw", "yr", "women", "feet", "am", "pm",
    "hr", "cu cm", "square", "v â € ™", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph",
    "day", "hour", "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³",
    "hectare", "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month", "km", "m", "cm", "mm",
    "apple", "liter", "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface", "litre",
    "pi sq m", "s .", "metre", "meter", "inch"};

// Plain replacements of the normalisation, in the harness's order (three groups, applied at its three points).
constexpr std::pair<const char*, const char*> kMatricesAndFractions[] = {
    {"bmatrix", "pmatrix"}, {"tfrac", "frac"}, {"dfrac", "frac"}, {"\\left", ""}, {"\\right", ""},
    {"\\{", "{"},         {"\\}", "}"}};
constexpr std::pair<const char*, const char*> kDegreesAndDollars[] = {
    {"^{\\circ}", ""}, {"^\\circ", ""}, {"\\$", ""}, {"$", ""}};
constexpr std::pair<const char*, const char*> kPrefixesSetsPercent[] = {
    {"x=", ""},         {"y=", ""},        {"z=", ""},       {"x\\in", ""},   {"y\\in", ""},  {"z\\in", ""},
    {"x\\to", ""},      {"y\\to", ""},     {"z\\to", ""},    {"\\emptyset", "{}"}, {"(-\\infty,\\infty)", "\\mathbb{R}"},
    {"\\%", ""},        {"%", ""},         {" .", " 0."},    {"{.", "{0."},     {"infinity", "\\infty"}};

// Every unit word, then every unit word + "s", each as (^|\W)word($|\W).
const std::vector<std::unique_ptr<Regex>>& unit_patterns() {
  static const auto patterns = [] {
    std::vector<std::unique_ptr<Regex>> p;
    for (const char* suffix : {"", "s"})
      for (const char* w : kUnitWords)
        p.push_back(std::make_unique<Regex>(std::string(R"((^|\W))") + w + suffix + R"(($|\W))", "unit words"));
    return p;
  }();
  return patterns;
}

// The text with every byte that does not belong to valid UTF-8 replaced by U+FFFD (a generation may stop inside
// a character; the rules' regexes read UTF-8).
std::string valid_utf8(const std::string& s) {
  std::string out;
  const auto* bytes = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_char_size(bytes + i, s.size() - i);
    if (n > 0) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

// Bytes of the UTF-8 character starting at s[i].
size_t char_bytes(const std::string& s, size_t i) {
  size_t n = 1;
  while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80) ++n;
  return n;
}


// \frac12 -> \frac{1}{2}, \frac1{72} -> \frac{1}{72}; the text unchanged when a \frac has fewer than two
// characters after it.
std::string fix_fracs(const std::string& s) {
  const auto parts = split(s, "\\frac");
  std::string out = parts[0];
  for (size_t k = 1; k < parts.size(); ++k) {
    const auto& p = parts[k];
    out += "\\frac";
    if (!p.empty() && p[0] == '{') {
      out += p;
      continue;
    }
    if (p.empty()) return s;
    const size_t na = char_bytes(p, 0);
    if (na >= p.size()) return s;
    const size_t nb = char_bytes(p, na);
    const std::string a = p.substr(0, na), b = p.substr(na, nb), rest = p.substr(na + nb);
    out += b != "{" ? "{" + a + "}{" + b + "}" + rest : "{" + a + "}" + b + rest;
  }
  return out;
}

// "3/4" -> \frac{3}{4} when both sides are integers as Python writes them (or hold "sqrt").
std::string fix_a_slash_b(const std::string& s) {
  const auto parts = split(s, "/");
  if (parts.size() != 2) return s;
  static const Regex integer(R"(^(0|-?[1-9][0-9]*)$)");
  for (const auto& p : parts)
    if (!contains(p, "sqrt") && !integer.search(p)) return s;
  return "\\frac{" + parts[0] + "}{" + parts[1] + "}";
}

// w2n's word values.
const std::map<std::string, int64_t>& number_word_values() {
  static const std::map<std::string, int64_t> v = {
      {"zero", 0},         {"one", 1},          {"two", 2},          {"three", 3},       {"four", 4},
      {"five", 5},         {"six", 6},          {"seven", 7},        {"eight", 8},       {"nine", 9},
      {"ten", 10},         {"eleven", 11},      {"twelve", 12},      {"thirteen", 13},   {"fourteen", 14},
      {"fifteen", 15},     {"sixteen", 16},     {"seventeen", 17},   {"eighteen", 18},   {"nineteen", 19},
      {"twenty", 20},      {"thirty", 30},      {"forty", 40},       {"fifty", 50},      {"sixty", 60},
      {"seventy", 70},     {"eighty", 80},      {"ninety", 90},      {"hundred", 100},   {"thousand", 1000},
      {"million", 1000000}, {"billion", 1000000000}, {"point", -1}};
  return v;
}

// w2n's number_formation: up to four words below a thousand ("two hundred twenty three").
std::optional<int64_t> small_number(const std::vector<std::string>& words) {
  if (words.empty()) return std::nullopt;
  std::vector<int64_t> n;
  for (const auto& w : words) n.push_back(number_word_values().at(w));
  if (n.size() == 4) return n[0] * n[1] + n[2] + n[3];
  if (n.size() == 3) return n[0] * n[1] + n[2];
  if (n.size() == 2) return (n[0] == 100 || n[1] == 100) ? n[0] * n[1] : n[0] + n[1];
  return n[0];
}

// The words of t that w2n knows, in order.
std::vector<std::string> number_words_in(const std::string& t) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < t.size()) {
    while (i < t.size() && is_space(t[i])) ++i;
    size_t j = i;
    while (j < t.size() && !is_space(t[j])) ++j;
    if (j > i && number_word_values().count(t.substr(i, j - i))) words.push_back(t.substr(i, j - i));
    i = j;
  }
  return words;
}

// w2n's whole part of number words without "point", each scale word at most once: the small numbers before
// "billion", "million" and "thousand" times those, plus the rest. Nothing where w2n fails: scales out of order, or
// a part it cannot form.
std::optional<int64_t> whole_number(const std::vector<std::string>& words) {
  auto index = [&](const char* w) -> int64_t {
    const auto at = std::find(words.begin(), words.end(), w);
    return at == words.end() ? -1 : at - words.begin();
  };
  const int64_t bi = index("billion"), mi = index("million"), ti = index("thousand");
  if ((ti > -1 && (ti < mi || ti < bi)) || (mi > -1 && mi < bi)) return std::nullopt;
  const int64_t n = static_cast<int64_t>(words.size());
  if (n == 1) return number_word_values().at(words[0]);
  auto part = [&](int64_t from, int64_t to) {
    return small_number(std::vector<std::string>(words.begin() + from, words.begin() + to));
  };
  int64_t total = 0, start = 0;
  const std::array<std::pair<int64_t, int64_t>, 3> scales = {{{bi, 1000000000}, {mi, 1000000}, {ti, 1000}}};
  for (const auto& [at, scale] : scales) {
    if (at < 0) continue;
    const auto m = part(start, at);
    if (!m) return std::nullopt;
    total += *m * scale;
    start = at + 1;
  }
  if (start < n) {
    const auto rest = part(start, n);
    if (!rest) return std::nullopt;
    total += *rest;
  }
  return total;
}

// total plus the words after "point", each read as one digit (w2n's way); total alone if one is not a digit.
std::string with_decimals(int64_t total, const std::vector<std::string>& decimals) {
  std::string digits;
  for (const auto& d : decimals) {
    const int64_t v = number_word_values().at(d);
    if (v < 0 || v > 9) return std::to_string(total);  // w2n adds nothing for a bad decimal part
    digits += static_cast<char>('0' + v);
  }
  return fmt::format("{}", total + std::stod("0." + digits));
}
}  // namespace

std::string convert_number_words(const std::string& text) {
  std::string t = text;
  replace_all(t, "-", " ");
  for (auto& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!t.empty() && t.find_first_not_of("0123456789") == std::string::npos) {
    // Python's int(): leading zeros go
    const auto nz = t.find_first_not_of('0');
    return nz == std::string::npos ? "0" : t.substr(nz);
  }
  auto words = number_words_in(t);
  if (words.empty()) return text;
  auto count = [&](const char* w) { return std::count(words.begin(), words.end(), w); };
  if (count("thousand") > 1 || count("million") > 1 || count("billion") > 1 || count("point") > 1) return text;
  std::vector<std::string> decimals;
  if (count("point") == 1) {
    const auto at = std::find(words.begin(), words.end(), "point");
    decimals.assign(at + 1, words.end());
    words.erase(at, words.end());
  }
  const auto total = whole_number(words);
  if (!total) return text;
  return decimals.empty() ? std::to_string(*total) : with_decimals(*total, decimals);
}

std::string strip_math_answer(const std::string& answer) {
  static const Regex array_begin(R"(\\begin\{array\}\{.*?\})"), array_end(R"(\\end\{array\})");
  static const Regex trailing_text(R"(\\text{.*?}$)"), text_arg(R"(\\text\{(.*?)\})"), mbox(R"(\\mbox{.*?})");
  static const Regex zeros_inside(R"((\d+)\.0*([^\d]))"), zeros_end(R"((\d+)\.0*$)"), bare_sqrt(R"(\\sqrt(\w+))");
  std::string s = trim(valid_utf8(answer));
  replace_all(s, "\n", "");
  while (!s.empty() && s.back() == '.') s.pop_back();
  replace_all(s, "\\!", "");
  s = array_begin.replace_all(s, "\\begin{pmatrix}");
  s = array_end.replace_all(s, "\\end{pmatrix}");
  for (const auto& [from, to] : kMatricesAndFractions) replace_all(s, from, to);
  if (const auto t = trim(trailing_text.replace_all(s, "")); !t.empty() && t != s) s = t;  // a trailing unit
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& unit : unit_patterns())
      if (auto t = unit->replace_all(s, "\\1\\2"); !t.empty()) s = std::move(t);
  for (const auto& [from, to] : kDegreesAndDollars) replace_all(s, from, to);
  s = convert_number_words(s);
  s = text_arg.replace_all(s, "\\1");
  for (const auto& [from, to] : kPrefixesSetsPercent) replace_all(s, from, to);
  if (!contains(s, "\\infty")) replace_all(s, "inf", "\\infty");
  replace_all(s, "+\\inity", "\\infty");
  replace_all(s, "and", "");
  replace_all(s, "\\mathbf", "");
  s = mbox.replace_all(s, "");
  if (contains(s, "j") && !contains(s, "i")) replace_all(s, "j", "i");
  s = zeros_inside.replace_all(s, "\\1\\2");
  s = zeros_end.replace_all(s, "\\1");
  if (s.empty()) return s;
  if (s[0] == '.') s = "0" + s;
  if (const auto sides = split(s, "="); sides.size() == 2 && utf8_length(sides[0]) <= 2) s = sides[1];  // "k=5"
  s = bare_sqrt.replace_all(s, "\\sqrt{\\1}");
  replace_all(s, " ", "");
  s = fix_fracs(s);
  return fix_a_slash_b(s);
}

std::string extract_math_answer(const std::string& completion) {
  const std::string t = valid_utf8(completion);
  std::string pred;
  if (contains(t, "final answer is $") && contains(t, "$. I hope")) {
    pred = trim(split(t.substr(t.find("final answer is $") + 17), "$. I hope")[0]);
  } else if (contains(t, "boxed")) {
    const std::string after = t.substr(t.rfind("boxed") + 5);
    if (after.empty()) return "";
    if (after[0] == '{') {
      int depth = 1;
      for (size_t i = 1; i < after.size(); ++i) {
        const char c = after[i];
        if (c == '{') ++depth;
        if (c == '}' && --depth == 0) break;
        pred += c;
      }
    } else {
      pred = trim(split(after, "$")[0]);
    }
  } else if (contains(t, "he answer is")) {
    pred = trim(t.substr(t.rfind("he answer is") + 12));
  } else if (contains(t, "final answer is")) {
    pred = trim(t.substr(t.rfind("final answer is") + 15));
  } else {
    static const Regex number(R"(-?\d*\.?\d+)");
    std::string no_commas = t;
    replace_all(no_commas, ",", "");
    const auto all = number.matches(no_commas);
    if (!all.empty()) pred = no_commas.substr(all.back().first, all.back().second - all.back().first);
  }
  static const Regex newline(R"(\n\s*)");
  pred = newline.replace_all(pred, "");
  if (!pred.empty() && pred.front() == ':') pred.erase(0, 1);
  if (!pred.empty() && pred.back() == '.') pred.pop_back();
  if (!pred.empty() && pred.back() == '/') pred.pop_back();
  return strip_math_answer(pred);
}

std::string extract_choice_letter(const std::string& completion) {
  std::string t = split(valid_utf8(completion), "Problem:")[0];
  replace_all(t, "choice is", "answer is");
  for (auto& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const Regex letter(R"(answer is \(?([abcde])\)?)");
  const auto m = letter.search(t);
  if (!m) return "";
  return std::string(1, static_cast<char>(std::toupper(static_cast<unsigned char>((*m)[1][0]))));
}

}  // namespace rho
