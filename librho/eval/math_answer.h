#pragma once
// Answers of math benchmarks, read by the rules of the Rho-1 evaluation harness (math-evaluation-harness):
//   - extract_math_answer: the answer a free-form solution gives, first rule that applies:
//       1. Minerva's "final answer is $X$. I hope it is correct." -> X;
//       2. the last \boxed{X} (braces balanced; "\boxed X" up to the next '$');
//       3. the text after the last "he answer is" ("The answer is" / "the answer is"), then "final answer is";
//       4. the last number (-?\d*\.?\d+ once commas are removed);
//     then newlines are dropped, a leading ':' and a trailing '.' or '/' go, and strip_math_answer normalises.
//   - strip_math_answer: the harness's normalisation (its strip_string): \left/\right, \dfrac/\tfrac -> \frac,
//     bmatrix/array -> pmatrix, trailing \text{unit}, unit words (MathQA's list), degrees, '$', number words
//     ("twenty three" -> 23), \text{X} -> X, "x=" and similar prefixes, '%', ".5" -> "0.5", "2.000" -> "2",
//     "k = 5" -> "5", \sqrt2 -> \sqrt{2}, \frac12 -> \frac{1}{2}, "3/4" -> \frac{3}{4}, and no spaces.
//   - extract_choice_letter: "answer is (B)" / "choice is B" (A-E, any case, before any "Problem:"), upper case;
//     "" when there is none.
// The harness's rules are kept where they are odd (units like "a" or "m" are removed as whole words, "and" is
// removed anywhere) so that accuracies compare with published ones; docs/eval.md lists them.
#include <string>

namespace rho {

std::string strip_math_answer(const std::string& answer);

std::string extract_math_answer(const std::string& completion);

std::string extract_choice_letter(const std::string& completion);

// w2n-style number words: "twenty three" -> "23", "one hundred five" -> "105", "three point five" -> "3.5";
// the text unchanged when it holds no number word or the words do not form a number.
std::string convert_number_words(const std::string& text);

}  // namespace rho
