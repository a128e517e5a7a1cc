// The math benchmark suite: the answer rules, the judge, the benchmark files and prompts, the tool loop and
// the sandbox that runs model-written code.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "helpers.h"
#include "librho/eval/benchmarks.h"
#include "librho/eval/judge.h"
#include "librho/eval/latex_expr.h"
#include "librho/eval/math_answer.h"
#include "librho/eval/sandbox.h"
#include "librho/util/error.h"
#include "librho/util/text.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
// Both answers go through strip_math_answer first, as the suite grades them.
bool judged_equal(const std::string& predicted, const std::string& reference) {
  return rho::math_equal(rho::strip_math_answer(predicted), rho::strip_math_answer(reference));
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}
}  // namespace

TEST_CASE("the judge: equal pairs of every answer kind", "[judge]") {
  const std::vector<std::pair<std::string, std::string>> equal = {
      // numbers, separators, percent forms, currency, decimals
      {"18", "18"}, {"18.0", "18"}, {"1,234", "1234"}, {"\\$18.00", "18"}, {"$1,000", "1000"}, {"50\\%", "0.5"},
      {"50", "0.5"}, {"0.5", "50"}, {"3.14159", "3.1416"}, {".5", "0.5"}, {"-3", "-3.0"}, {"twenty three", "23"},
      {"5 \\text{ cm}", "5"}, {"90^\\circ", "90"}, {"6 \\text{ inches}", "6"},
      // fractions and roots
      {"\\frac{1}{2}", "0.5"}, {"\\dfrac{3}{4}", "3/4"}, {"\\frac12", "\\frac{1}{2}"}, {"0.0833333333333333", "\\frac{1}{12}"},
      {"\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"}, {"\\frac{\\sqrt{3}}{2}", "sqrt(3)/2"}, {"\\sqrt{12}", "2\\sqrt{3}"},
      {"\\sqrt2", "\\sqrt{2}"}, {"\\pi", "3.14159"}, {"2\\pi", "\\pi+\\pi"}, {"\\sqrt[3]{8}", "2"}, {"2^{10}", "1024"},
      {"5!", "120"}, {"\\binom{5}{2}", "10"}, {"\\tfrac{1}{3}", "\\frac{2}{6}"},
      // expressions
      {"2x+2", "2(x+1)"}, {"\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}"}, {"x^2-1", "(x-1)(x+1)"},
      {"\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{2\\sqrt{33}+15}", "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{15+2\\sqrt{33}}"},
      {"\\sin^2 x+\\cos^2 x", "1"}, {"\\log_2 8", "3"}, {"|{-4}|", "4"},
      // each function the reader knows, by value
      {"\\csc(1)", "1.18840"}, {"\\cot(1)", "0.642093"}, {"\\tan(1)", "1.55741"}, {"\\arcsin(0.5)", "0.523599"},
      {"asin(0.5)", "0.523599"}, {"\\arccos(0.5)", "1.04720"}, {"acos(0.5)", "1.04720"}, {"\\arctan(1)", "0.785398"},
      {"atan(1)", "0.785398"}, {"\\sinh(1)", "1.17520"}, {"\\cosh(1)", "1.54308"}, {"\\tanh(1)", "0.761594"},
      {"\\exp(1)", "2.71828"}, {"\\ln(\\exp(2))", "2"}, {"\\log(100)", "4.60517"}, {"sqrt(16)", "4"},
      // tuples, intervals, sets, matrices
      {"(1,4.5)", "(1,\\frac{9}{2})"}, {"\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"},
      {"(0.6,2.6667]", "(\\frac{3}{5},\\frac{8}{3}]"}, {"[2,5)", "[2,5)"}, {"\\{1,2\\}", "{1,2}"},
      {"\\begin{pmatrix}-\\frac{7}{4}&-2\\\\4&\\frac{1}{4}\\end{pmatrix}", "\\begin{bmatrix}-1.75&-2\\\\4&0.25\\end{bmatrix}"},
      // equations and labels
      {"x = 3", "3"}, {"k=5", "5"}, {"-34x-45y+20z-100=0", "34x+45y-20z+100=0"},
      // text and choices
      {"\\text{(C)}", "(C)"}, {"\\text{Monday}", "Monday"}, {"B", "B"}};
  for (const auto& [p, r] : equal) {
    INFO(p << "  vs  " << r);
    CHECK(judged_equal(p, r));
  }
}

TEST_CASE("the judge: unequal pairs of every answer kind", "[judge]") {
  const std::vector<std::pair<std::string, std::string>> unequal = {
      {"18", "19"}, {"1,234", "1235"}, {"0.5", "0.6"}, {"\\frac{100}{3}", "33.3"}, {"\\frac{1+\\sqrt{5}}{2}", "2"},
      {"\\pi", "3.2"}, {"\\sqrt{2}", "1.4"}, {"2x+2", "2x+3"}, {"x^2", "x^3"}, {"\\frac{x}{2}", "\\frac{2}{x}"},
      {"(1,2)", "(2,1)"}, {"(1,2,3)", "(1,2)"}, {"[2,5)", "[2,6)"},
      {"\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}"},
      {"\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"}, {"A", "B"}, {"", "3"},
      {"\\text{Monday}", "Tuesday"}, {"2x+3y=6", "2x+3y=7"}, {"\\sin x", "\\cos x"}};
  for (const auto& [p, r] : unequal) {
    INFO(p << "  vs  " << r);
    CHECK_FALSE(judged_equal(p, r));
  }
}

TEST_CASE("the judge keeps the harness's known looseness", "[judge]") {
  // Rules kept as the harness has them, so accuracies compare with published ones (docs/eval.md lists them):
  // brackets are dropped before a text comparison, and one-letter unit words are removed.
  CHECK(judged_equal("2(x+2)", "2x+2"));
  CHECK(judged_equal("(+5)(b+2)", "(a+5)(b+2)"));  // "a" is a unit word
  CHECK(judged_equal("[2,5)", "(2,5)"));          // intervals compare part by part, brackets aside
  CHECK_FALSE(judged_equal("2x+3y=6", "4x+6y=12"));  // equations are equal up to sign only, not up to a factor
}

TEST_CASE("symbolic equivalence reads LaTeX and plain syntax", "[judge]") {
  CHECK(rho::read_math_expression("\\frac{\\sqrt{3}}{2}") == std::optional<std::string>("1/2*sqrt(3)"));
  CHECK(rho::read_math_expression("sqrt(3)/2") == std::optional<std::string>("1/2*sqrt(3)"));
  CHECK(rho::read_math_expression("0.25") == std::optional<std::string>("1/4"));
  CHECK(rho::read_math_expression("x^23") == std::optional<std::string>("3*x^2"));  // LaTeX: ^ takes one character
  CHECK(rho::read_math_expression("x**23") == std::optional<std::string>("x^23"));
  CHECK(rho::symbolic_equal("\\sec^2(y)", "\\tan^2(y)+1"));
  CHECK(rho::symbolic_equal("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"));
  CHECK_FALSE(rho::symbolic_equal("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{3}}{2}"));
  // What does not read is never equal, and guards stop work without end
  for (const char* bad : {"x <", "\\text{no}", "\\frac{1}", "2^{100000}", "1000!", "(((", "3,4"})
    CHECK_FALSE(rho::read_math_expression(bad).has_value());
  CHECK_FALSE(rho::symbolic_equal("2^{100000}", "2^{100000}"));
  // Nested powers fold into one (GiNaC): their size is bounded as a whole, and expansions too big are not tried
  CHECK_FALSE(rho::read_math_expression("{{{2^{1000}}^{1000}}^{1000}}^{1000}").has_value());
  CHECK_FALSE(rho::symbolic_equal("{{{x+1}^{64}}^{64}}^{64}", "{{{x+1}^{64}}^{64}}^{64}+1"));
  CHECK(rho::symbolic_equal("(a+b+c+d+e+f+g+h)^{64}", "(h+g+f+e+d+c+b+a)^{64}"));
  // A pole at a sample point is skipped, not thrown
  CHECK_NOTHROW(rho::symbolic_equal("\\frac{1}{13x-1}", "y"));
  CHECK(rho::symbolic_equal("\\frac{1}{13x-1}", "\\frac{2}{26x-2}"));
  // Python's slicing and float(): a multi-byte last character, '_' only between digits, beyond the double range
  CHECK_NOTHROW(rho::math_equal("(1,2)\xC3\xA9", "(1,2)"));
  CHECK_FALSE(rho::math_equal("_", "0"));
  CHECK(rho::parse_digits("1_000") == 1000.0);
  CHECK_FALSE(rho::parse_digits("1__0").has_value());
  CHECK(std::isinf(*rho::parse_digits("1e400")));
  CHECK_FALSE(rho::math_equal("", ""));
  CHECK_FALSE(rho::read_math_expression("(x+y+z)^{1000}").has_value());  // its expansion would not end soon
  CHECK_FALSE(rho::symbolic_equal("\\frac{1}{0}", "\\frac{1}{0}"));
}

TEST_CASE("answers are extracted as the harness extracts them", "[judge]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"so x = 4.\nFinal Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"},
      {"Therefore $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", "(3,\\frac{\\pi}{2})"},
      {"first \\boxed{1} then \\boxed{\\frac{\\sqrt{x}}{\\{y\\}}}", "\\frac{\\sqrt{x}}{{y}}"},
      {"the value is \\boxed 5$ done", "5"},
      {"Natalia sold 48/2 = 24 clips. 48+24 = 72. The answer is 72.", "72"},
      {"He pays $1,200 in all. The answer is $1,200.", "1,200"},
      {"... so she has 3 apples left and gets 5.5 more", "5.5"},
      {"#### 18", "18"},
      {"The answer is: twenty three", "23"},
      {"nothing here", ""}};
  for (const auto& [text, answer] : cases) {
    INFO(text);
    CHECK(rho::extract_math_answer(text) == answer);
  }
  // A generation cut inside a UTF-8 character is read, not refused
  CHECK_NOTHROW(rho::extract_math_answer("The answer is 5 \xE2\x82"));
  CHECK(rho::extract_math_answer("so 7. \xFF\xFE and 8") == "8");
  CHECK(rho::extract_choice_letter("\xC3 the answer is (A)") == "A");
  CHECK(rho::extract_choice_letter("Thus the answer is (B). Problem: the answer is (C)") == "B");
  CHECK(rho::extract_choice_letter("So the choice is d") == "D");
  CHECK(rho::extract_choice_letter("The Answer Is E") == "E");
  CHECK(rho::extract_choice_letter("no letter at all") == "");
  CHECK(rho::convert_number_words("one hundred five") == "105");
  CHECK(rho::convert_number_words("two thousand and twenty-four") == "2024");
  CHECK(rho::convert_number_words("three point five") == "3.5");
  CHECK(rho::convert_number_words("x plus y") == "x plus y");
  CHECK(rho::convert_number_words("007") == "7");
  CHECK(rho::convert_number_words("two hundred twenty three") == "223");
  CHECK(rho::convert_number_words("two million three thousand") == "2003000");
  CHECK(rho::convert_number_words("thousand million") == "thousand million");  // scales out of order
  CHECK(rho::convert_number_words("one thousand one thousand") == "one thousand one thousand");
  CHECK(rho::convert_number_words("one point two five") == "1.25");
  CHECK(rho::convert_number_words("point five") == "0.5");
  CHECK(rho::convert_number_words("five point") == "5");
  CHECK(rho::convert_number_words("one point ten") == "1");  // a decimal word that is not a digit adds nothing
}

TEST_CASE("benchmark files are laid out, prompted and graded as the harness does", "[bench]") {
  rho::test::TempDir dir;
  const fs::path root = dir.path;
  write(root / "prompts/cot/gsm8k.md", "Question: 1+1?\nAnswer: 2. The answer is 2.\n\n");
  write(root / "prompts/cot/math.md", "Problem:\n1+1\nSolution:\n$\\boxed{2}$\n");
  write(root / "prompts/cot/mmlu_stem.md", "Problem:\nPick.\nSolution:\nThe answer is (A).\n");
  write(root / "prompts/cot/mathqa.md", "Problem:\nPick.\nSolution:\nThe answer is (A).\n");
  write(root / "prompts/tora/gsm8k.md", "Question: 1+1?\n\nSolution:\n```python\nprint(1+1)\n```\n```output\n2\n```\n$\\boxed{2}$\n");
  write(root / "svamp/test.jsonl",
        "{\"Answer\":145.0,\"Question\":\"How big is each group?\",\"Equation\":\"( 290.0 / 2.0 )\",\"Body\":\"There are 290 bananas in 2 groups\",\"idx\":0}\n"
        "{\"Answer\":3.0,\"Question\":\"Is it?\",\"Equation\":\"x\",\"Body\":\"Yes.\",\"idx\":1}\n");
  write(root / "math/test.jsonl",
        "{\"problem\":\"Find $x$.\",\"solution\":\"So $x = \\\\boxed{\\\\dfrac{1}{2}}$.\",\"idx\":7}\n");
  write(root / "asdiv/test.jsonl", "{\"body\":\"Seven red apples.\",\"question\":\"How many? \",\"answer\":\"9 (apples)\",\"formula\":\"7+2=9\"}\n");
  write(root / "mmlu_stem/test.jsonl", "{\"question\":\"Which?\",\"choices\":[\"a1\",\" a2 \",\"a3\",\"a4\"],\"answer\":2}\n");
  write(root / "sat_math/test.jsonl", "{\"id\":\"0\",\"question\":\"Which?\",\"options\":\"A) 1 B) 2 C) 3 D) 4\",\"Answer\":\"C\"}\n");
  write(root / "mathqa/test.jsonl", "{\"problem\":\"what is 2 + 2 ?\",\"options\":\"a ) 3 , b ) 4 , c ) 5 , d ) 6 , e ) 7\",\"correct\":\"b\"}\n");
  write(root / "gsm8k/test.jsonl", "{\"question\":\"2+2?\",\"answer\":\"2+2=<<2+2=4>>4\\n#### 4\"}\n");

  const auto svamp = rho::load_benchmark(rho::Benchmark::Svamp, rho::PromptStyle::Cot, root.string(), "");
  REQUIRE(svamp.items.size() == 2);
  CHECK(svamp.items[0].question == "There are 290 bananas in 2 groups. How big is each group?");
  CHECK(svamp.items[0].gold == "145");
  CHECK(svamp.fewshot == "Question: 1+1?\nAnswer: 2. The answer is 2.\n\n\n");
  CHECK(rho::benchmark_prompt(svamp, svamp.items[0], rho::PromptStyle::Cot) ==
        svamp.fewshot + "Question: There are 290 bananas in 2 groups. How big is each group?\nAnswer:");
  const auto math = rho::load_benchmark(rho::Benchmark::Math, rho::PromptStyle::Cot, root.string(), "");
  CHECK(math.items[0].id == "7");
  CHECK(math.items[0].gold == "\\frac{1}{2}");
  CHECK(rho::benchmark_prompt(math, math.items[0], rho::PromptStyle::Cot) == math.fewshot + "Problem:\nFind $x$.\nSolution:");
  const auto asdiv = rho::load_benchmark(rho::Benchmark::Asdiv, rho::PromptStyle::Cot, root.string(), "");
  CHECK(asdiv.items[0].question == "Seven red apples. How many?");
  CHECK(asdiv.items[0].gold == "9");
  CHECK(asdiv.items[0].id == "0");
  const auto mmlu = rho::load_benchmark(rho::Benchmark::MmluStem, rho::PromptStyle::Cot, root.string(), "");
  CHECK(mmlu.items[0].question ==
        "Which?\nWhat of the following is the right choice? Explain your answer.\n(A) a1, (B) a2, (C) a3, (D) a4");
  CHECK(mmlu.items[0].gold == "C");
  const auto sat = rho::load_benchmark(rho::Benchmark::SatMath, rho::PromptStyle::Cot, root.string(), "");
  CHECK(sat.items[0].question == "Which?\nWhat of the following is the right choice? Explain your answer.\n(A) 1 (B) 2 (C) 3 (D) 4");
  const auto mathqa = rho::load_benchmark(rho::Benchmark::Mathqa, rho::PromptStyle::Cot, root.string(), "");
  CHECK(mathqa.items[0].question ==
        "What is 2 + 2 ?\nWhat of the following is the right choice? Explain your answer.\n(A) 3, (B) 4, (C) 5, (D) 6, (E) 7");
  CHECK(mathqa.items[0].gold == "B");
  const auto gsm = rho::load_benchmark(rho::Benchmark::Gsm8k, rho::PromptStyle::ToolIntegrated, root.string(), "");
  CHECK(rho::benchmark_prompt(gsm, gsm.items[0], rho::PromptStyle::ToolIntegrated) == gsm.fewshot + "Question: 2+2?\n\nSolution:");
  CHECK(gsm.items[0].gold == "4");

  // Grading given completions
  rho::SuiteOptions o;
  o.eval_dir = root.string();
  const auto graded = rho::grade_benchmark(rho::Benchmark::Svamp, o,
                                           {{"1", "So it is 3."}, {"0", "290 / 2 = 145.0. The answer is 145."}}, "given");
  REQUIRE(graded.records.size() == 2);
  CHECK(graded.records[0].id == "0");  // in the test file's order
  CHECK(graded.correct == 2);
  CHECK(rho::grade_benchmark(rho::Benchmark::Math, o, {{"7", "The answer is $0.5$"}}, "given").correct == 1);
  CHECK(rho::grade_benchmark(rho::Benchmark::MmluStem, o, {{"0", "The answer is (B)."}}, "given").correct == 0);
  CHECK_THROWS_WITH(rho::grade_benchmark(rho::Benchmark::Svamp, o, {{"9", "x"}}, "given.jsonl"),
                    Contains("given.jsonl") && Contains("idx 9"));

  // Bad input names the file, line and field
  write(root / "bad/test.jsonl", "{\"question\":\"q\",\"answer\":\"no marker\"}\n");
  CHECK_THROWS_WITH(rho::load_benchmark(rho::Benchmark::Gsm8k, rho::PromptStyle::Cot, root.string(), (root / "bad/test.jsonl").string()),
                    Contains("test.jsonl:1") && Contains("'answer'"));
  write(root / "bad/mmlu.jsonl", "{\"question\":\"q\",\"choices\":[\"a\"],\"answer\":0}\n");
  CHECK_THROWS_WITH(rho::load_benchmark(rho::Benchmark::MmluStem, rho::PromptStyle::Cot, root.string(), (root / "bad/mmlu.jsonl").string()),
                    Contains("mmlu.jsonl:1") && Contains("'choices'"));
  CHECK_THROWS_WITH(rho::load_benchmark(rho::Benchmark::MmluStem, rho::PromptStyle::ToolIntegrated, root.string(), ""),
                    Contains("tool-integrated"));
}

TEST_CASE("a suite run split across processes is merged back: records in file order, counts summed", "[bench]") {
  auto part = [](std::vector<int64_t> lines, int64_t correct, double seconds) {
    rho::BenchmarkResult r;
    r.which = rho::Benchmark::Svamp;
    r.data_file = "svamp/test.jsonl";
    r.seconds = seconds;
    r.truncated_prompts = 1;
    for (const auto line : lines) {
      rho::BenchmarkRecord rec;
      rec.id = std::to_string(line - 1);
      rec.line = line;
      rec.completion = fmt::format("completion {}\xff", line);  // invalid UTF-8 is replaced, as in --records
      rec.correct = line % 2 == 0;
      rec.tool_status = {"ok"};
      r.records.push_back(rec);
    }
    r.correct = correct;
    return std::vector<rho::BenchmarkResult>{r};
  };
  const auto a = rho::suite_part_json(part({1, 3, 5}, 0, 2.0)), b = rho::suite_part_json(part({2, 4}, 2, 3.5));
  const auto merged = rho::merge_suite_parts({a, b}, {"part-0", "part-1"});
  REQUIRE(merged.size() == 1);
  const auto& m = merged[0];
  REQUIRE(m.records.size() == 5);
  for (size_t i = 0; i < 5; ++i) CHECK(m.records[i].line == static_cast<int64_t>(i + 1));
  CHECK(m.records[1].completion == "completion 2\xef\xbf\xbd");
  CHECK(m.records[1].tool_status == std::vector<std::string>{"ok"});
  CHECK(m.correct == 2);
  CHECK(m.truncated_prompts == 2);
  CHECK(m.seconds == 3.5);  // the slowest process's
  CHECK(m.data_file == "svamp/test.jsonl");
  // Parts that disagree, or are not parts, are named.
  auto other = part({2}, 0, 1.0);
  other[0].which = rho::Benchmark::Gsm8k;
  CHECK_THROWS_WITH(rho::merge_suite_parts({a, rho::suite_part_json(other)}, {"part-0", "part-1"}),
                    Contains("part-1: benchmark 0 is gsm8k"));
  CHECK_THROWS_WITH(rho::merge_suite_parts({a, "{"}, {"part-0", "part-1"}), Contains("part-1: not a suite part"));
  // Files: merged once every part is there with the run's key; nothing while one is missing or another run's.
  rho::test::TempDir dir;
  const auto prefix = (dir.path / "out.json").string();
  rho::write_suite_part(prefix, 0, 2, "key", part({1, 3}, 0, 1.0));
  CHECK(!rho::collect_suite_parts(prefix, 2, "key"));
  rho::write_suite_part(prefix, 1, 2, "other run", part({2}, 1, 1.0));
  CHECK(!rho::collect_suite_parts(prefix, 2, "key"));
  rho::write_suite_part(prefix, 1, 2, "key", part({2}, 1, 1.0));
  const auto files = rho::collect_suite_parts(prefix, 2, "key");
  REQUIRE(files);
  CHECK((*files)[0].records.size() == 3);
}

TEST_CASE("the program run after a tool-integrated step", "[bench]") {
  // The latest block runs after the earlier successful ones (without their prints); a failed block lends
  // only its imports.
  const std::string text =
      "Step one.\n```python\nimport math\nx = 2\nprint(x)\n```\n```output\n2\n```\n"
      "Then.\n```python\nfrom sympy import sqrt\ny = undefined\n```\n```output\nNameError: name 'undefined' is not defined\n```\n"
      "Again.\n```python\nprint(x * 3)\n```";
  CHECK(rho::program_to_run(text) == "from sympy import sqrt\nimport math\nx = 2\n\nprint(x * 3)\n");
  CHECK(rho::program_to_run("```python\n```python\n") == "raise ValueError('Invalid trajectory')");
  // As generation stops: at the "```output" stop string, after the block's closing fence.
  CHECK(rho::program_to_run("Compute.\n```python\nx = 1\nprint(x)\n```\n") == "x = 1\nprint(x)\n");
  CHECK(rho::program_to_run("No code at all.") == "");
  // Text between a block and its output, or an output that has text before its fence, is not a trajectory.
  CHECK(rho::program_to_run("```python\nx = 1\n```\nthen\n```python\ny = 2\n```\n") ==
        "raise ValueError('Invalid trajectory')");
}

TEST_CASE("tool-integrated solving runs the model's programs and feeds their output back", "[bench][sandbox]") {
  if (const auto why = rho::sandbox_unavailable_reason(); !why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  rho::SuiteOptions o;
  o.style = rho::PromptStyle::ToolIntegrated;
  o.max_tool_calls = 2;
  // Three items solved together: A runs one program then answers, B only writes programs (it stops after
  // max_tool_calls, errors coming back as their last line), C answers at once.
  std::vector<std::vector<std::string>> calls;  // the texts of each round
  auto scripted = [&](const std::vector<std::string>& texts, const std::vector<size_t>& items) {
    calls.push_back(texts);
    std::vector<std::string> outs;
    for (size_t j = 0; j < items.size(); ++j) {
      if (items[j] == 1)
        outs.push_back("```python\nprint(1/0)\n```");
      else if (items[j] == 2 || calls.size() > 1)
        outs.push_back("So the answer is $\\boxed{42}$.");
      else
        outs.push_back("Compute it.\n```python\nprint(6 * 7)\n```\n");
    }
    return outs;
  };
  const auto s = rho::solve_items({"PROMPT", "P", "Q"}, scripted, o);
  REQUIRE(s.size() == 3);
  REQUIRE(calls.size() == 2);
  CHECK(calls[0] == std::vector<std::string>{"PROMPT", "P", "Q"});
  REQUIRE(calls[1].size() == 2);  // C is done after one round
  CHECK(calls[1][0] == "PROMPTCompute it.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\n");
  CHECK(s[0].completion == "Compute it.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\nSo the answer is $\\boxed{42}$.");
  CHECK(s[0].tool_status == std::vector<std::string>{"ok"});
  CHECK(rho::predicted_answer(rho::Benchmark::Gsm8k, s[0].completion) == "42");
  CHECK(s[1].tool_status == std::vector<std::string>{"error", "error"});
  CHECK_THAT(s[1].completion, Contains("```output\nZeroDivisionError: division by zero\n```"));
  CHECK_THAT(s[1].completion, Contains("Reach max function call limit."));
  CHECK(s[2].completion == "So the answer is $\\boxed{42}$.");
  CHECK(s[2].tool_status.empty());

  // Chain of thought calls the model once and runs nothing.
  o.style = rho::PromptStyle::Cot;
  calls.clear();
  const auto cot = rho::solve_items({"PROMPT", "P"}, scripted, o);
  CHECK(calls.size() == 1);
  CHECK(cot[1].tool_status.empty());
  CHECK(cot[1].completion == "```python\nprint(1/0)\n```");
}

TEST_CASE("programs of a round run in parallel sandboxes, each with its own verdict, in order", "[bench][sandbox]") {
  if (const auto why = rho::sandbox_unavailable_reason(); !why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  rho::SandboxOptions o;
  o.cpu_seconds = 1;
  o.wall_seconds = 60;  // far above the CPU limit: the infinite loop meets that one first however loaded the machine
  std::vector<std::string> programs;
  for (int i = 0; i < 6; ++i) programs.push_back(fmt::format("print({} * 7)", i));
  programs.push_back("print(1/0)");
  programs.push_back("import librho_no_such_module");
  programs.push_back("while True:\n    pass");
  programs.push_back("open('out.txt', 'w').write('x')\nprint(open('out.txt').read())");  // each its own folder
  using Status = rho::SandboxResult::Status;
  for (int64_t jobs : {1, 4}) {
    INFO("jobs " << jobs);
    const auto r = rho::run_programs(programs, o, jobs);
    REQUIRE(r.size() == programs.size());
    for (int i = 0; i < 6; ++i) {
      CHECK(r[i].status == Status::Ok);
      CHECK(rho::trim(r[i].out) == std::to_string(i * 7));
    }
    CHECK(r[6].status == Status::Error);
    CHECK_THAT(r[6].message, Contains("ZeroDivisionError"));
    CHECK(r[7].missing_module);
    CHECK(r[8].status == Status::CpuLimit);
    CHECK(r[9].status == Status::Ok);
    CHECK(rho::trim(r[9].out) == "x");
  }
  CHECK(rho::run_programs({}, o, 0).empty());
}

TEST_CASE("the sandbox stops hostile programs and leaves nothing changed outside", "[sandbox]") {
  if (const auto why = rho::sandbox_unavailable_reason(); !why.empty()) {
    WARN("skipped: " << why);
    CHECK(rho::run_python("print(1)").status == rho::SandboxResult::Status::Unavailable);
    return;
  }
  rho::test::TempDir dir;
  const fs::path home = dir.path / "home";
  write(home / ".ssh/id_rsa", "SECRET KEY\n");
  const std::string outside = (dir.path / "escaped.txt").string();
  // The wall clock is far above the CPU limit, so a CPU-bound program meets the CPU limit first however loaded the
  // machine; the cases that test the wall clock (sleeping programs) set a short one of their own.
  rho::SandboxOptions o;
  o.cpu_seconds = 2;
  o.wall_seconds = 60;
  o.output_bytes = 1 << 16;
  o.folder_bytes = 8 << 20;
  o.file_bytes = 4 << 20;
  using S = rho::SandboxResult::Status;
  struct Case {
    const char* what;
    std::string code;
    S status;
    const char* message;     // part of the message, "" for none
    double wall_seconds = 0;  // > 0: this case's wall-clock limit
  };
  const std::vector<Case> cases = {
      {"infinite loop", "while True:\n    pass\n", S::CpuLimit, "CPU"},
      {"sleep past the wall clock", "import time\ntime.sleep(600)\n", S::WallLimit, "Timeout", 4},
      {"fork bomb", "import os\nwhile True:\n    os.fork()\n", S::Error, "PermissionError"},
      {"subprocess", "import subprocess\nsubprocess.run(['ls'])\n", S::Error, "PermissionError"},
      {"huge allocation", "x = bytearray(10**12)\n", S::Error, "MemoryError"},
      {"writing outside its directory", "open(" + std::string("'") + outside + "', 'w').write('x')\n", S::Error,
       "Permission denied"},
      {"reading a private key", "print(open('" + (home / ".ssh/id_rsa").string() + "').read())\n", S::Error,
       "Permission denied"},
      {"listing the root", "import os\nprint(os.listdir('/'))\n", S::Error, "Permission denied"},
      {"opening a socket", "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n", S::Error,
       "PermissionError"},
      {"printing gigabytes", "import sys\nwhile True:\n    sys.stdout.write('x' * 1000000)\n", S::OutputLimit, "Output"},
      {"a file past the size limit", "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * 1000000)\n", S::Error,
       "File too large"},
      {"signalling the parent", "import os, signal\nos.kill(os.getppid(), signal.SIGTERM)\n", S::Error, "PermissionError"},
      {"a Unix socket", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/run/dbus/system_bus_socket')\n",
       S::Error, "PermissionError"},
      {"changing a file's mode outside", "import os\nos.chmod('" + (home / ".ssh/id_rsa").string() + "', 0o777)\n",
       S::Error, "PermissionError"},
      {"many files past the folder limit",
       "for i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * 1000000)\nimport time\ntime.sleep(600)\n",
       S::FolderLimit, "written"},
      {"closing its output and sleeping", "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(600)\n", S::WallLimit,
       "Timeout", 4},
      {"memory outside its address-space limit", "import os\nfd = os.memfd_create('x')\n", S::Error, "PermissionError"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto oc = o;
    if (c.wall_seconds > 0) oc.wall_seconds = c.wall_seconds;
    const auto r = rho::run_python(c.code, oc);
    CHECK(rho::status_name(r.status) == std::string(rho::status_name(c.status)));
    CHECK_THAT(r.message, Contains(c.message));
    CHECK(r.out.size() + r.err.size() <= static_cast<size_t>(o.output_bytes));
    CHECK(r.seconds < oc.wall_seconds + 2);
  }
  CHECK_FALSE(fs::exists(outside));
  CHECK((fs::status(home / ".ssh/id_rsa").permissions() & fs::perms::others_write) == fs::perms::none);
  std::ifstream key(home / ".ssh/id_rsa");
  std::string content((std::istreambuf_iterator<char>(key)), std::istreambuf_iterator<char>());
  CHECK(content == "SECRET KEY\n");

  // Ordinary programs still run: output, its own directory, threads, a missing module named as such
  auto ok = rho::run_python("import threading, os\nopen('f', 'w').write('hi')\nt = threading.Thread(target=lambda: None)\n"
                            "t.start(); t.join()\nprint(open('f').read(), sum(range(10)))\n", o);
  CHECK(ok.status == S::Ok);
  CHECK(ok.out == "hi 45\n");
  auto missing = rho::run_python("import no_such_module_xyz\n", o);
  CHECK(missing.status == S::Error);
  CHECK(missing.missing_module);
}
