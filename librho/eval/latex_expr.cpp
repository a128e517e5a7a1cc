#include "librho/eval/latex_expr.h"

#include <ginac/ginac.h>

#include <cctype>
#include <cmath>
#include <complex>
#include <map>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace rho {
namespace {
using GiNaC::ex;

struct Unreadable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Recursive descent over the text; variables come from (and go into) a table shared by the expressions that
// are compared, so "x" is the same symbol in both.
class Reader {
 public:
  Reader(const std::string& text, std::map<std::string, GiNaC::symbol>& symbols) : s_(text), symbols_(symbols) {}

  ex read() {
    if (s_.size() > 400) throw Unreadable("too long");
    ex e = expr();
    skip();
    if (i_ != s_.size()) throw Unreadable("trailing text");
    return e;
  }

 private:
  const std::string& s_;
  std::map<std::string, GiNaC::symbol>& symbols_;
  size_t i_ = 0;
  int depth_ = 0;

  // Spaces, spacing commands and \left / \right are skipped.
  void skip() {
    for (;;) {
      while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
      bool skipped = false;
      for (const char* w : {"\\left", "\\right", "\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad", "\\displaystyle"}) {
        const std::string word(w);
        if (s_.compare(i_, word.size(), word) == 0 &&
            !(std::isalpha(static_cast<unsigned char>(word.back())) && i_ + word.size() < s_.size() &&
              std::isalpha(static_cast<unsigned char>(s_[i_ + word.size()])))) {
          i_ += word.size();
          skipped = true;
          break;
        }
      }
      if (!skipped) return;
    }
  }
  char peek() {
    skip();
    return i_ < s_.size() ? s_[i_] : '\0';
  }
  bool eat(const std::string& t) {
    skip();
    if (s_.compare(i_, t.size(), t) != 0) return false;
    // a command must not run into letters: "\pi" is not the start of "\pia"
    if (t[0] == '\\' && std::isalpha(static_cast<unsigned char>(t.back())) && i_ + t.size() < s_.size() &&
        std::isalpha(static_cast<unsigned char>(s_[i_ + t.size()])))
      return false;
    i_ += t.size();
    return true;
  }
  void expect(const std::string& t) {
    if (!eat(t)) throw Unreadable("expected " + t);
  }
  // The command at the cursor ("\frac"), or "".
  std::string command() {
    skip();
    if (peek() != '\\') return "";
    size_t j = i_ + 1;
    while (j < s_.size() && std::isalpha(static_cast<unsigned char>(s_[j]))) ++j;
    return s_.substr(i_, j - i_);
  }
  // A plain-syntax word at the cursor ("sqrt" in "sqrt(2)"), or "".
  std::string word() {
    skip();
    size_t j = i_;
    while (j < s_.size() && std::isalpha(static_cast<unsigned char>(s_[j]))) ++j;
    return s_.substr(i_, j - i_);
  }

  ex expr() {
    if (++depth_ > 100) throw Unreadable("nested too deeply");
    ex e;
    if (eat("-")) e = -term();
    else {
      eat("+");
      e = term();
    }
    for (;;) {
      if (eat("+")) e += term();
      else if (eat("-")) e -= term();
      else break;
    }
    --depth_;
    return e;
  }

  bool starts_factor() {
    const char c = peek();
    if (c == '\0') return false;
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.' || std::isalpha(static_cast<unsigned char>(c)) ||
        c == '(' || c == '[' || c == '{')
      return true;
    if (c == '\\') {
      const auto cmd = command();
      return cmd != "\\cdot" && cmd != "\\times" && cmd != "\\div" && cmd != "\\right" && !cmd.empty() &&
             cmd != "\\end";
    }
    return false;
  }

  ex term() {
    ex e = unary();
    for (;;) {
      if (eat("**")) throw Unreadable("dangling **");
      if (eat("*") || eat("\\cdot") || eat("\\times")) e *= unary();
      else if (eat("/") || eat("\\div")) e /= unary();
      else if (starts_factor()) e *= power();  // an implicit product: 2x, 3\sqrt{2}, (a)(b)
      else break;
    }
    return e;
  }

  ex unary() {
    if (eat("-")) return -unary();
    if (eat("+")) return unary();
    return power();
  }

  ex power() {
    ex base = postfix();
    if (eat("**")) return raise(base, unary());
    if (eat("^")) return raise(base, exponent());
    return base;
  }

  // LaTeX's exponent: a {group}, a (group), a sign and one factor, or one character / command.
  ex exponent() {
    const char c = peek();
    if (c == '{') return group('{', '}');
    if (c == '(') return group('(', ')');
    if (eat("-")) return -exponent();
    if (std::isdigit(static_cast<unsigned char>(c))) {
      ++i_;
      return GiNaC::numeric(c - '0');
    }
    return primary();
  }

  // Integer exponents past 1000 (or past 64 over a non-number) do not read, nor a power of a number whose exact
  // value would pass kMaxBits (GiNaC folds nested powers: {2^{1000}}^{1000} is one number of 10^6 bits).
  static constexpr double kMaxBits = 20000;
  ex raise(const ex& base, const ex& exp) {
    if (GiNaC::is_a<GiNaC::numeric>(exp)) {
      const auto& n = GiNaC::ex_to<GiNaC::numeric>(exp);
      const bool numeric_base = GiNaC::is_a<GiNaC::numeric>(base);
      if (!n.is_rational() || GiNaC::abs(n) > (numeric_base ? 1000 : 64)) throw Unreadable("exponent too large");
      if (numeric_base) {
        const auto& b = GiNaC::ex_to<GiNaC::numeric>(base);
        const double bits = bits_of(b) * std::abs(n.to_double());
        if (bits > kMaxBits) throw Unreadable("power too large");
      }
    }
    return GiNaC::pow(base, exp);
  }

  // Bits of a rational's numerator and denominator together.
  static double bits_of(const GiNaC::numeric& q) {
    if (!q.is_rational()) return 64;
    return static_cast<double>(GiNaC::numer(q).int_length() + GiNaC::denom(q).int_length());
  }

  ex postfix() {
    ex e = primary();
    while (eat("!")) {
      if (!GiNaC::is_a<GiNaC::numeric>(e) || !GiNaC::ex_to<GiNaC::numeric>(e).is_nonneg_integer() ||
          GiNaC::ex_to<GiNaC::numeric>(e) > 200)
        throw Unreadable("factorial of what");
      e = GiNaC::factorial(e);
    }
    return e;
  }

  ex group(char open, char close) {
    expect(std::string(1, open));
    ex e = expr();
    expect(std::string(1, close));
    return e;
  }

  // A braced argument, or (LaTeX) a single character: \frac12.
  ex argument() {
    if (peek() == '{') return group('{', '}');
    const char c = peek();
    if (std::isdigit(static_cast<unsigned char>(c))) {
      ++i_;
      return GiNaC::numeric(c - '0');
    }
    if (std::isalpha(static_cast<unsigned char>(c))) return variable();
    return primary();
  }

  ex number() {
    size_t j = i_;
    std::string digits;
    int64_t decimals = -1;
    while (j < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[j])) || (s_[j] == '.' && decimals < 0))) {
      if (s_[j] == '.') {
        // "3." followed by no digit is the end of a sentence, not a decimal point
        if (j + 1 >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[j + 1]))) break;
        decimals = 0;
      } else {
        digits += s_[j];
        if (decimals >= 0) ++decimals;
      }
      ++j;
    }
    if (digits.empty()) throw Unreadable("a number expected");
    if (digits.size() > 60) throw Unreadable("number too long");
    i_ = j;
    GiNaC::numeric v(digits.c_str());  // exact: an integer of any size
    if (decimals > 0) v = v / GiNaC::numeric(10).power(GiNaC::numeric(decimals));
    return v;
  }

  ex variable() {
    std::string name(1, s_[i_++]);
    if (i_ < s_.size() && s_[i_] == '_') {  // x_1, x_{12}
      ++i_;
      if (i_ < s_.size() && s_[i_] == '{') {
        const size_t close = s_.find('}', i_);
        if (close == std::string::npos) throw Unreadable("unclosed subscript");
        name += "_" + s_.substr(i_ + 1, close - i_ - 1);
        i_ = close + 1;
      } else if (i_ < s_.size()) {
        name += "_" + std::string(1, s_[i_++]);
      }
    }
    auto at = symbols_.find(name);
    if (at == symbols_.end()) at = symbols_.emplace(name, GiNaC::symbol(name)).first;
    return at->second;
  }

  // The functions apply() knows (log with a base, log_b x, is apply's own case).
  using Function = ex (*)(const ex&);
  static const std::map<std::string, Function>& functions() {
    static const std::map<std::string, Function> table = {
        {"sin", [](const ex& a) -> ex { return GiNaC::sin(a); }},
        {"cos", [](const ex& a) -> ex { return GiNaC::cos(a); }},
        {"tan", [](const ex& a) -> ex { return GiNaC::tan(a); }},
        {"sec", [](const ex& a) -> ex { return 1 / GiNaC::cos(a); }},
        {"csc", [](const ex& a) -> ex { return 1 / GiNaC::sin(a); }},
        {"cot", [](const ex& a) -> ex { return GiNaC::cos(a) / GiNaC::sin(a); }},
        {"arcsin", [](const ex& a) -> ex { return GiNaC::asin(a); }},
        {"asin", [](const ex& a) -> ex { return GiNaC::asin(a); }},
        {"arccos", [](const ex& a) -> ex { return GiNaC::acos(a); }},
        {"acos", [](const ex& a) -> ex { return GiNaC::acos(a); }},
        {"arctan", [](const ex& a) -> ex { return GiNaC::atan(a); }},
        {"atan", [](const ex& a) -> ex { return GiNaC::atan(a); }},
        {"sinh", [](const ex& a) -> ex { return GiNaC::sinh(a); }},
        {"cosh", [](const ex& a) -> ex { return GiNaC::cosh(a); }},
        {"tanh", [](const ex& a) -> ex { return GiNaC::tanh(a); }},
        {"exp", [](const ex& a) -> ex { return GiNaC::exp(a); }},
        {"ln", [](const ex& a) -> ex { return GiNaC::log(a); }},
        {"log", [](const ex& a) -> ex { return GiNaC::log(a); }},
        {"sqrt", [](const ex& a) -> ex { return GiNaC::sqrt(a); }},
        {"abs", [](const ex& a) -> ex { return GiNaC::abs(a); }}};
    return table;
  }

  static bool function_name(const std::string& w) { return functions().count(w) > 0; }

  // A function's argument: (x), {x}, or the next factor (\sin x, \sin 2x reads as sin(2)*x as in LaTeX's
  // convention of one factor); \sin^2 x squares the result.
  ex apply(const std::string& name) {
    const auto f = functions().find(name);
    if (f == functions().end()) throw Unreadable("unknown function " + name);
    ex power_of = 1;
    ex base;
    if (name == "log" && eat("_")) base = argument();
    if (eat("^")) power_of = exponent();
    ex arg;
    if (peek() == '(') arg = group('(', ')');
    else if (peek() == '{') arg = group('{', '}');
    else arg = power();
    const ex value = base.is_zero() ? f->second(arg) : GiNaC::log(arg) / GiNaC::log(base);
    return power_of.is_equal(1) ? value : raise(value, power_of);
  }

  ex primary() {
    const char c = peek();
    if (c == '\0') throw Unreadable("unexpected end");
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') return number();
    if (c == '(') return group('(', ')');
    if (c == '[') return group('[', ']');
    if (c == '{') return group('{', '}');
    if (c == '|') {
      ++i_;
      ex e = expr();
      expect("|");
      return GiNaC::abs(e);
    }
    if (c == '\\') return command_primary();
    if (std::isalpha(static_cast<unsigned char>(c))) return word_primary();
    throw Unreadable(std::string("unexpected '") + c + "'");
  }

  // A primary that starts with a command: \frac, \sqrt (and \sqrt[n]), \binom, \pi, \infty, a function.
  ex command_primary() {
    const std::string cmd = command();
    const std::string name = cmd.substr(1);
    i_ += cmd.size();
    if (name == "frac" || name == "dfrac" || name == "tfrac") {
      ex num = argument();
      ex den = argument();
      return num / den;
    }
    if (name == "sqrt") {
      if (eat("[")) {
        ex n = expr();
        expect("]");
        return raise(argument(), 1 / n);
      }
      return GiNaC::sqrt(argument());
    }
    if (name == "binom" || name == "dbinom" || name == "tbinom") {
      ex n = argument(), k = argument();
      if (!GiNaC::is_a<GiNaC::numeric>(n) || !GiNaC::is_a<GiNaC::numeric>(k) ||
          !GiNaC::ex_to<GiNaC::numeric>(n).is_nonneg_integer() || GiNaC::ex_to<GiNaC::numeric>(n) > 1000)
        throw Unreadable("binomial of what");
      return GiNaC::binomial(n, k);
    }
    if (name == "pi") return GiNaC::Pi;
    if (name == "infty") return symbol_named("infty");
    if (function_name(name)) return apply(name);
    throw Unreadable("unknown command " + cmd);
  }

  // A primary that starts with a letter: a function written out with its parenthesis (sin(x), not s*i*n), pi, or
  // a variable.
  ex word_primary() {
    const std::string w = word();
    if (w.size() > 1 && function_name(w) && s_.compare(i_ + w.size(), 1, "(") == 0) {
      i_ += w.size();
      return apply(w);
    }
    if (w == "pi") {
      i_ += 2;
      return GiNaC::Pi;
    }
    return variable();
  }

  ex symbol_named(const std::string& name) {
    auto at = symbols_.find(name);
    if (at == symbols_.end()) at = symbols_.emplace(name, GiNaC::symbol(name)).first;
    return at->second;
  }
};

std::optional<ex> read(const std::string& text, std::map<std::string, GiNaC::symbol>& symbols) {
  try {
    return Reader(text, symbols).read();
  } catch (const std::exception&) {  // Unreadable, or GiNaC refusing (0^-1 and the like)
    return std::nullopt;
  }
}

// The number of terms expand() could make of e, roughly (a power of a sum of t terms to n: C(n + t - 1, t - 1)),
// capped: expand and normal are not tried past kMaxTerms.
constexpr double kMaxTerms = 1e5;
double expansion_terms(const ex& e) {
  if (GiNaC::is_a<GiNaC::add>(e)) {
    double t = 0;
    for (size_t i = 0; i < e.nops(); ++i) t += expansion_terms(e.op(i));
    return std::min(t, 1e300);
  }
  if (GiNaC::is_a<GiNaC::mul>(e)) {
    double t = 1;
    for (size_t i = 0; i < e.nops(); ++i) t = std::min(t * expansion_terms(e.op(i)), 1e300);
    return t;
  }
  if (GiNaC::is_a<GiNaC::power>(e)) {
    const double t = expansion_terms(e.op(0));
    const ex n = e.op(1);
    if (t <= 1 || !GiNaC::is_a<GiNaC::numeric>(n)) return t;
    const double k = std::abs(GiNaC::ex_to<GiNaC::numeric>(n).to_double());
    double c = 1;  // C(k + t - 1, t - 1), stopped once past the cap
    for (double i = 1; i < t && c <= kMaxTerms; ++i) c = c * (k + i) / i;
    return c;
  }
  double t = 1;  // a symbol, a number, or a function of its arguments
  for (size_t i = 0; i < e.nops(); ++i) t = std::max(t, expansion_terms(e.op(i)));
  return t;
}

// The complex value of e with `at` substituted (empty: e is closed), or nullopt.
std::optional<std::complex<double>> value_of(const ex& e, const GiNaC::exmap& at = {}) {
  try {
    const ex v = GiNaC::evalf(at.empty() ? e : e.subs(at));
    if (!GiNaC::is_a<GiNaC::numeric>(v)) return std::nullopt;
    const auto& n = GiNaC::ex_to<GiNaC::numeric>(v);
    const std::complex<double> z(GiNaC::real(n).to_double(), GiNaC::imag(n).to_double());
    if (!std::isfinite(z.real()) || !std::isfinite(z.imag())) return std::nullopt;
    return z;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool close(std::complex<double> a, std::complex<double> b, double rel) {
  return std::abs(a - b) <= rel * std::max(std::abs(a), std::abs(b));
}
}  // namespace

std::optional<std::string> read_math_expression(const std::string& text) {
  std::map<std::string, GiNaC::symbol> symbols;
  const auto e = read(text, symbols);
  if (!e) return std::nullopt;
  std::ostringstream out;
  out << *e;
  return out.str();
}

bool symbolic_equal(const std::string& a_text, const std::string& b_text) {
  std::map<std::string, GiNaC::symbol> symbols;
  const auto a = read(a_text, symbols), b = read(b_text, symbols);
  if (!a || !b) return false;
  try {
    const ex d = *a - *b;
    if (expansion_terms(d) <= kMaxTerms && (d.expand().is_zero() || GiNaC::normal(d).is_zero())) return true;
  } catch (const std::exception&) {
  }
  if (symbols.empty()) {
    const auto va = value_of(*a), vb = value_of(*b);
    return va && vb && close(*va, *vb, 1e-4);
  }
  // Variables: compare the values at fixed points where both sides are defined.
  int defined = 0;
  for (int k = 0; k < 6; ++k) {
    GiNaC::exmap at;
    int j = 0;
    for (const auto& [name, sym] : symbols) at[sym] = GiNaC::numeric(1 + 7 * k + 3 * j++, 13);  // 1/13, 4/13, ...
    const auto va = value_of(*a, at), vb = value_of(*b, at);
    if (!va || !vb) continue;
    if (!close(*va, *vb, 1e-9) && std::abs(*va - *vb) > 1e-12) return false;
    ++defined;
  }
  return defined >= 3;
}

}  // namespace rho
