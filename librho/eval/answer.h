#pragma once
// Answers of math word problems: finding the final answer in a model's (or a reference's) solution text, and
// comparing answers as numbers.
//
// Extraction, first rule that applies:
//   1. GSM8K's "#### N": the first number after the last "####";
//   2. "The answer is N" (any case): the first number after the last "the answer is";
//   3. otherwise the last number in the text.
// A number is digits with optional thousands groups ("1,234"), an optional decimal part ("2.5") and an optional
// '-' sign when the '-' does not follow a letter or digit ("16-3" is 16 and 3, "= -3" is -3); a '$' between the
// sign and the digits is allowed. Nothing found gives "".
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rho {

// Every number in the text, in order, as written (sign and '$' included).
std::vector<std::string> find_numbers(std::string_view text);

std::string extract_answer(std::string_view text);

// "$1,234." -> 1234: trims spaces, drops '$' and thousands commas and a trailing '.', then parses the whole
// rest as a number; nullopt when it is not one.
std::optional<double> parse_number(std::string_view answer);

// Canonical text of an answer: the number in shortest form ("3.0" and "$3" -> "3", "-2.50" -> "-2.5"), or the
// trimmed text when it is not a number.
std::string normalize_answer(std::string_view answer);

// Exact match after normalisation: numbers compare as numbers (relative tolerance 1e-9), other answers as
// trimmed text. An empty answer matches nothing.
bool answers_match(std::string_view predicted, std::string_view gold);

}  // namespace rho
