#pragma once
// Math expressions written in LaTeX or in plain calculator syntax, read into GiNaC (a computer-algebra library)
// to decide whether two answers are the same value: \frac{\sqrt{3}}{2} = \sqrt{3}/2 = sqrt(3)/2,
// 2x+2 = 2(x+1), \frac{x}{7}+\frac{2}{7} = \frac{x+2}{7}, 0.5 = \frac12.
//
// Read: numbers (decimals are exact: 0.5 is 1/2), single-letter variables (x_1, x_{n} with subscripts), + - * /
// and implicit products (2x, 3\sqrt{2}, (a)(b)), ^ and ** (LaTeX's ^ takes one character or a {group}),
// \frac \dfrac \tfrac, \sqrt{x}, \sqrt[n]{x}, \pi, \cdot, \times, \div, |x|, n!, \binom{n}{k}, ( ) [ ] { },
// \left and \right, spacing commands, and the functions \sin \cos \tan \sec \csc \cot \arcsin \arccos \arctan
// \sinh \cosh \tanh \exp \ln \log \log_{b} (with or without the backslash, argument in parentheses, braces, or
// the next factor: \sin x, \sin^2 x). Anything else (text, sets, inequalities, commas) does not read.
// Guards: inputs over 400 characters, exponents over 1000 (over 64 when the base is not a number) and
// factorials over 200 do not read.
#include <optional>
#include <string>

namespace rho {

// The expression in GiNaC's notation ("1/2*sqrt(3)"), or nullopt when the text does not read.
std::optional<std::string> read_math_expression(const std::string& text);

// a = b as values: both read, and a - b simplifies to 0, or (no variables) their numeric values agree within a
// relative 1e-4 (the harness's tolerance), or (variables) they agree within 1e-9 at six points where both are
// defined (at least three). False when either does not read.
bool symbolic_equal(const std::string& a, const std::string& b);

}  // namespace rho
