#pragma once
// The harness's judge (its math_equal): whether a predicted answer equals the reference answer, both as
// strip_math_answer leaves them. First rule that says yes:
//   1. the same text;
//   2. both numbers (commas dropped; "50%" is 0.5): equal within a relative 1e-4 to the reference, the
//      reference / 100 or the reference * 100 (percent forms); two numbers that differ are not equal;
//   3. the same text once brackets are dropped ((, ), {, }; an outer [ ] when the reference is not ( ) and the
//      reverse), ignoring case;
//   4. tuples and intervals "(a,b)", "[a,b)": the same number of parts, each equal by these rules;
//   5. matrices (\begin{pmatrix}...\end{pmatrix}): the same shape, each entry equal by these rules;
//   6. equations: "y = 2x+1" against "2x - y = -1" (lhs - rhs equal up to sign); "x = 3" against "3";
//   7. symbolic_equal (latex_expr.h): the same value as expressions.
// An empty prediction equals nothing.
#include <optional>
#include <string>

namespace rho {

bool math_equal(const std::string& prediction, const std::string& reference);

// Python's float() on the text with commas removed, or of a "N%" as N/100; nullopt when neither reads.
std::optional<double> parse_digits(const std::string& text);

}  // namespace rho
