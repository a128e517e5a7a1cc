#include "librho/eval/benchmarks.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <cmath>
#include <thread>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "librho/eval/judge.h"
#include "librho/eval/lm.h"
#include "librho/eval/math_answer.h"
#include "librho/util/cpus.h"
#include "librho/util/enum_names.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/json_fields.h"
#include "librho/util/progress.h"
#include "librho/util/regex.h"
#include "librho/util/text.h"

namespace rho {
namespace {
using json = nlohmann::json;

constexpr BenchmarkSpec kSpecs[] = {
    {Benchmark::Gsm8k, "gsm8k/test.jsonl", "prompts/cot/gsm8k.md", "prompts/tora/gsm8k.md", false, false},
    {Benchmark::Math, "math/test.jsonl", "prompts/cot/math.md", "prompts/tora/math.md", true, false},
    {Benchmark::MinervaMath, "math_oai/test.jsonl", "prompts/cot/minerva_math.md", "prompts/tora/math.md", true, false},
    {Benchmark::Svamp, "svamp/test.jsonl", "prompts/cot/gsm8k.md", "prompts/tora/gsm8k.md", false, false},
    {Benchmark::Asdiv, "asdiv/test.jsonl", "prompts/cot/gsm8k.md", "prompts/tora/gsm8k.md", false, false},
    {Benchmark::Mawps, "mawps/test.jsonl", "prompts/cot/gsm8k.md", "prompts/tora/gsm8k.md", false, false},
    {Benchmark::GsmHard, "gsm_hard/test.jsonl", "prompts/cot/gsm8k.md", "prompts/tora/gsm8k.md", false, false},
    {Benchmark::Tabmwp, "tabmwp/test.jsonl", "prompts/cot/gsm8k.md", "prompts/tora/gsm8k.md", false, false},
    {Benchmark::Mathqa, "mathqa/test.jsonl", "prompts/cot/mathqa.md", "", true, true},
    {Benchmark::MmluStem, "mmlu_stem/test.jsonl", "prompts/cot/mmlu_stem.md", "", true, true},
    {Benchmark::SatMath, "sat_math/test.jsonl", "prompts/cot/mmlu_stem.md", "", true, true},
};

const char* name_of(Benchmark b) { return enum_name(kBenchmarkNames, b); }

// One line's item and where it came from, for errors.
struct Row {
  const json& value;
  std::string source;  // "file:line"

  const json& at(const char* field) const {
    const auto it = value.find(field);
    if (it == value.end()) throw Error(fmt::format("{}: field '{}' is missing", source, field));
    return *it;
  }
  bool has(const char* field) const { return value.contains(field); }
  std::string text(const char* field) const {
    const auto& v = at(field);
    if (!v.is_string()) throw Error(fmt::format("{}: field '{}' must be a string", source, field));
    return v.get<std::string>();
  }
  // Python's str() of a string or a number (43.0 -> "43.0", 7 -> "7").
  std::string str(const char* field) const {
    const auto& v = at(field);
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return v.dump();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 1e16) return fmt::format("{:.1f}", d);
      return fmt::format("{}", d);
    }
    throw Error(fmt::format("{}: field '{}' must be a string or a number", source, field));
  }
};

const std::string kChoiceQuestion = "\nWhat of the following is the right choice? Explain your answer.\n";

// A Python list literal of quoted strings, or nullopt.
std::optional<std::vector<std::string>> python_string_list(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  auto skip = [&] {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  };
  skip();
  if (i >= text.size() || text[i++] != '[') return std::nullopt;
  for (skip(); i < text.size() && text[i] != ']';) {
    const char quote = text[i++];
    if (quote != '\'' && quote != '"') return std::nullopt;
    std::string item;
    while (i < text.size() && text[i] != quote) {
      if (text[i] == '\\' && i + 1 < text.size()) {
        const char e = text[++i];
        item += e == 'n' ? '\n' : e == 't' ? '\t' : e;
      } else {
        item += text[i];
      }
      ++i;
    }
    if (i >= text.size()) return std::nullopt;
    ++i;  // the closing quote
    out.push_back(item);
    skip();
    if (i < text.size() && text[i] == ',') ++i;
    skip();
  }
  if (i >= text.size()) return std::nullopt;
  return out;
}

std::string mathqa_options(const Row& r) {
  std::string options = trim(r.text("options"));
  if (!options.empty() && options[0] == '[') {  // a Python list of option strings: ['a ) 462', "b ) 530"]
    const auto list = python_string_list(options);
    if (!list) throw Error(fmt::format("{}: field 'options' is neither \"a ) ...\" text nor a list of strings", r.source));
    options = fmt::format("{}", fmt::join(*list, ", "));
  }
  if (options.empty() || options[0] != 'a')
    throw Error(fmt::format("{}: field 'options' must start with option a", r.source));
  for (char ch : std::string("abcde")) {
    const std::string c(1, ch);
    if (options.find(c + " ) ") == std::string::npos) continue;
    options = Regex(c + R"( \) )" + c + R"( \) )").replace_all(options, c + " ) ");
    options = Regex(c + R"( \) )").replace_all(options, "(" + std::string(1, static_cast<char>(std::toupper(ch))) + ") ");
  }
  for (size_t at = options.find(" , "); at != std::string::npos; at = options.find(" , ", at + 2)) options.replace(at, 3, ", ");
  return options;
}

// The question of each benchmark whose layout needs more than a field or two.
std::string svamp_question(const Row& r) {
  std::string body = trim(r.text("Body"));
  if (!ends_with(body, ".")) body += ".";
  return body + " " + trim(r.text("Question"));
}

// The table (with its title, if any), the question, and the choices where there are some, as a Python list.
std::string tabmwp_question(const Row& r) {
  const std::string title = r.has("table_title") && r.at("table_title").is_string() && !r.text("table_title").empty()
                                ? "regarding \"" + r.text("table_title") + "\" "
                                : "";
  std::string q = "Read the following table " + title + "and answer a question:\n" + r.text("table") + "\n" +
                  r.text("question");
  if (r.has("choices") && r.at("choices").is_array() && !r.at("choices").empty()) {
    std::string list = "[";
    for (const auto& c : r.at("choices")) list += (list.size() > 1 ? ", '" : "'") + c.get<std::string>() + "'";
    q += " Please select from the following options: " + list + "]";
  }
  return q;
}

std::string mmlu_stem_question(const Row& r) {
  const auto& choices = r.at("choices");
  if (!choices.is_array() || choices.size() != 4)
    throw Error(fmt::format("{}: field 'choices' must hold four options", r.source));
  std::string options;
  for (size_t i = 0; i < 4; ++i)
    options += fmt::format("{}({}) {}", i ? ", " : "", "ABCD"[i],
                           trim(choices[i].is_string() ? choices[i].get<std::string>() : choices[i].dump()));
  return trim(r.text("question")) + kChoiceQuestion + options;
}

// "A) x B) y" becomes "(A) x (B) y".
std::string sat_math_question(const Row& r) {
  std::string options = trim(r.text("options"));
  if (options.empty() || options[0] != 'A') throw Error(fmt::format("{}: field 'options' must start with A", r.source));
  options = "(" + options;
  for (char ch : std::string("BCD"))
    if (options.find(std::string(" ") + ch + ") ") != std::string::npos)
      options = Regex(std::string(" ") + ch + R"(\) )").replace_all(options, std::string(" (") + ch + ") ");
  return trim(r.text("question")) + kChoiceQuestion + trim(options);
}

std::string mathqa_question(const Row& r) {
  std::string problem = r.text("problem");
  if (!problem.empty()) problem[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(problem[0])));
  return trim(problem) + kChoiceQuestion + trim(mathqa_options(r));
}

// The question as the harness lays it out (its parse_question), before the yes/no suffix.
std::string question_of(Benchmark b, const Row& r) {
  switch (b) {
    case Benchmark::Asdiv:
      return trim(r.text("body")) + " " + trim(r.text("question"));
    case Benchmark::Svamp:
      return svamp_question(r);
    case Benchmark::Tabmwp:
      return tabmwp_question(r);
    case Benchmark::MmluStem:
      return mmlu_stem_question(r);
    case Benchmark::SatMath:
      return sat_math_question(r);
    case Benchmark::Mathqa:
      return mathqa_question(r);
    case Benchmark::Math:
    case Benchmark::MinervaMath:
      return r.text("problem");
    case Benchmark::Gsm8k:
      return r.text("question");
    case Benchmark::Mawps:
    case Benchmark::GsmHard:
      return r.text("input");
  }
  return "";
}

// The answer and the worked solution of each benchmark whose gold needs more than a field's text.
using Gold = std::pair<std::string, std::string>;

Gold mathqa_gold(const Row& r) {
  std::string letter = r.text("correct");
  for (auto& c : letter) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (letter.size() != 1 || letter[0] < 'A' || letter[0] > 'E')
    throw Error(fmt::format("{}: field 'correct' must be one of a-e", r.source));
  return {letter, r.has("rationale") ? r.str("rationale") : ""};
}

Gold gsm8k_gold(const Row& r) {
  const std::string answer = r.text("answer");
  const auto at = answer.find("####");
  if (at == std::string::npos || answer.find("####", at + 4) != std::string::npos)
    throw Error(fmt::format("{}: field 'answer' must hold one \"####\"", r.source));
  return {answer.substr(at + 4), trim(answer.substr(0, at))};
}

// Numeric answers (ans_type integer_number or decimal_number) are read as floats, as the harness does: "3/4" and
// "75%" as 0.75, whole values written "N.0".
Gold tabmwp_gold(const Row& r) {
  std::string answer = r.str("answer");
  const std::string type = r.has("ans_type") ? r.text("ans_type") : "";
  if (type == "integer_number" || type == "decimal_number") {
    auto number = [&](const std::string& t) {
      const auto v = parse_digits(t);
      if (!v) throw Error(fmt::format("{}: field 'answer' is not a number: {}", r.source, answer));
      return *v;
    };
    double v = 0;
    if (answer.find('/') != std::string::npos)
      v = number(answer.substr(0, answer.find('/'))) / number(answer.substr(answer.find('/') + 1));
    else if (answer.find('%') != std::string::npos)
      v = number(answer.substr(0, answer.find('%'))) / 100;
    else
      v = number(answer);
    answer = v == std::floor(v) && std::abs(v) < 1e16 ? fmt::format("{:.1f}", v) : fmt::format("{}", v);
  }
  return {answer, r.has("solution") ? r.str("solution") : ""};
}

Gold mmlu_stem_gold(const Row& r) {
  const auto& a = r.at("answer");
  if (!a.is_number_integer() || a.get<int64_t>() < 0 || a.get<int64_t>() > 3)
    throw Error(fmt::format("{}: field 'answer' must be 0-3", r.source));
  return {std::string(1, "ABCD"[a.get<int64_t>()]), ""};
}

// The reference answer (not yet normalised) and the worked solution: the harness's parse_ground_truth.
Gold gold_of(Benchmark b, const Row& r) {
  auto optional = [&](const char* field) { return r.has(field) ? r.str(field) : std::string(); };
  switch (b) {
    case Benchmark::Math:
    case Benchmark::MinervaMath: {
      const std::string solution = r.text("solution");
      return {extract_math_answer(solution), solution};
    }
    case Benchmark::Mathqa:
      return mathqa_gold(r);
    case Benchmark::Gsm8k:
      return gsm8k_gold(r);
    case Benchmark::GsmHard:
      return {r.str("target"), optional("code")};
    case Benchmark::Svamp:
      return {r.str("Answer"), optional("Equation")};
    case Benchmark::Asdiv:
      return {Regex(R"(\(.*?\))").replace_all(r.text("answer"), ""), optional("formula")};
    case Benchmark::Mawps:
      return {r.str("target"), ""};
    case Benchmark::Tabmwp:
      return tabmwp_gold(r);
    case Benchmark::MmluStem:
      return mmlu_stem_gold(r);
    case Benchmark::SatMath:
      return {r.text("Answer"), ""};
  }
  return {"", ""};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The harness's PythonExecutor report of a run: stdout (stripped), else the error's last line, each cut to
// 400 characters (the first and last 200 around "...").
std::string tool_output(const SandboxResult& r) {
  auto cut = [](const std::string& s) { return s.size() > 400 ? s.substr(0, 200) + "..." + s.substr(s.size() - 200) : s; };
  if (r.status == SandboxResult::Status::Ok) {
    const auto out = trim(r.out);
    return out.empty() ? "Done" : cut(out);
  }
  return cut(trim(r.message));
}

BenchmarkRecord record_of(const BenchmarkItem& item, Benchmark b, const std::string& completion) {
  BenchmarkRecord rec;
  rec.id = item.id;
  rec.line = item.line;
  rec.question = item.question;
  rec.completion = completion;
  rec.gold = item.gold;
  rec.predicted = predicted_answer(b, completion);
  try {
    rec.correct = !rec.predicted.empty() && math_equal(rec.predicted, rec.gold);
  } catch (const std::exception&) {  // a judge rule that cannot read the text: not equal, the run goes on
    rec.correct = false;
  }
  return rec;
}
}  // namespace

const BenchmarkSpec& benchmark_spec(Benchmark b) {
  for (const auto& s : kSpecs)
    if (s.which == b) return s;
  throw Error("unknown benchmark");
}

BenchmarkSet load_benchmark(Benchmark b, PromptStyle style, const std::string& eval_dir, const std::string& data_file,
                            int64_t limit) {
  namespace fs = std::filesystem;
  const auto& spec = benchmark_spec(b);
  BenchmarkSet set;
  set.which = b;
  set.data_file = !data_file.empty() ? data_file : (fs::path(eval_dir) / spec.data).string();
  const char* prompt = style == PromptStyle::Cot ? spec.cot_prompt : spec.tool_prompt;
  if (*prompt == '\0')
    throw Error(fmt::format("{} has no {} prompt (tool-integrated reasoning is for the free-form benchmarks)",
                            name_of(b), enum_name(kPromptStyleNames, style)));
  if (!eval_dir.empty()) {  // grading needs no prompt
    set.prompt_file = (fs::path(eval_dir) / prompt).string();
    set.fewshot = trim(read_text_file(set.prompt_file)) + "\n\n\n";
  }
  std::set<std::string> ids;
  int64_t position = 0;
  for (const auto& [line, value, source] : read_json_lines(set.data_file, limit)) {
    const Row row{value, source};
    BenchmarkItem item;
    item.line = line;
    item.id = row.has("idx") ? row.str("idx") : std::to_string(position);
    ++position;
    if (!ids.insert(item.id).second) throw Error(fmt::format("{}: idx {} occurs twice", source, item.id));
    auto [gold, solution] = gold_of(b, row);
    item.gold = strip_math_answer(gold);
    item.gold_solution = std::move(solution);
    item.question = question_of(b, row);
    const std::string lower = ascii_lower(item.gold);
    if (lower == "true" || lower == "false") item.question += " (True or False)";
    if (lower == "yes" || lower == "no") item.question += " (Yes or No)";
    item.question = trim(item.question);
    set.items.push_back(std::move(item));
  }
  return set;
}

std::string benchmark_prompt(const BenchmarkSet& set, const BenchmarkItem& item, PromptStyle style) {
  if (style == PromptStyle::ToolIntegrated) return set.fewshot + "Question: " + item.question + "\n\nSolution:";
  if (benchmark_spec(set.which).problem_layout) return set.fewshot + "Problem:\n" + item.question + "\nSolution:";
  return set.fewshot + "Question: " + item.question + "\nAnswer:";
}

std::vector<std::string> benchmark_stop_strings(PromptStyle style) {
  if (style == PromptStyle::ToolIntegrated) return {"\n\n---", "```output"};
  return {"\n\nQuestion:", "\n\nProblem:"};
}

std::string predicted_answer(Benchmark b, const std::string& completion) {
  // The harness normalises what its extraction returns once more (run_execute).
  if (benchmark_spec(b).multiple_choice) return strip_math_answer(extract_choice_letter(completion));
  return strip_math_answer(extract_math_answer(completion));
}

namespace {
// A tool-integrated completion as rationale / program / output parts, in order (the harness's
// text_to_trajectory); none when the blocks are not well formed.
struct TrajectoryPart {
  enum Role { Rationale, Program, Output } role;
  std::string content;
};

std::optional<std::vector<TrajectoryPart>> trajectory_parts(const std::string& completion) {
  std::vector<TrajectoryPart> parts;
  auto role = TrajectoryPart::Rationale;
  std::string content;
  const auto lines = split(completion, "\n");
  auto close = [&](TrajectoryPart::Role next) {
    parts.push_back({role, content});
    content.clear();
    role = next;
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& line = lines[i];
    if (line == "```python") {
      if (role != TrajectoryPart::Rationale) return std::nullopt;
      if (!content.empty()) parts.push_back({role, content});
      content.clear();
      role = TrajectoryPart::Program;
    } else if (role == TrajectoryPart::Program && line == "```") {
      if (content.empty()) return std::nullopt;
      close(TrajectoryPart::Output);
    } else if (role == TrajectoryPart::Output && starts_with(line, "```output")) {
      if (!content.empty()) return std::nullopt;
    } else if (role == TrajectoryPart::Output && line == "```") {
      close(TrajectoryPart::Rationale);
    } else {
      content += line;
      if (i + 1 < lines.size()) content += "\n";
    }
  }
  if (!content.empty()) parts.push_back({role, content});
  return parts;
}

// The harness's test of a block's output: no error word in it.
bool program_succeeded(const std::string& output) {
  const std::string out = ascii_lower(trim(output));
  for (const char* bad : {"error", "exception", "no algorithms", "cannot", "nan", "..."})
    if (contains(out, bad)) return false;
  return true;
}

// A program's lines, filtered.
std::vector<std::string> program_lines(const std::string& program, bool (*keep)(const std::string&)) {
  std::vector<std::string> kept;
  for (auto& line : split(program, "\n"))
    if (keep(line)) kept.push_back(std::move(line));
  return kept;
}
bool is_import(const std::string& line) { return starts_with(line, "import") || starts_with(line, "from"); }
bool is_not_print(const std::string& line) { return !starts_with(trim(line), "print("); }
}  // namespace

std::string program_to_run(const std::string& completion) {
  const auto parts = trajectory_parts(completion);
  if (!parts) return "raise ValueError('Invalid trajectory')";
  std::vector<std::string> programs, imports;
  for (size_t i = 0; i < parts->size(); ++i) {
    const auto& part = (*parts)[i];
    if (part.role != TrajectoryPart::Program) continue;
    if (i + 1 == parts->size()) {  // the latest block, not run yet
      programs.push_back(part.content);
    } else if ((*parts)[i + 1].role != TrajectoryPart::Output) {
      return "raise ValueError('Invalid trajectory')";
    } else if (program_succeeded((*parts)[i + 1].content)) {
      programs.push_back(part.content);
    } else {  // a failed block lends only its imports
      for (auto& line : program_lines(part.content, is_import)) imports.push_back(std::move(line));
    }
  }
  if (programs.empty()) programs.push_back("");
  if (!imports.empty()) programs[0] = fmt::format("{}\n{}", fmt::join(imports, "\n"), programs[0]);
  // Earlier programs run again, silently.
  for (size_t k = 0; k + 1 < programs.size(); ++k)
    programs[k] = fmt::format("{}", fmt::join(program_lines(programs[k], is_not_print), "\n"));
  return fmt::format("{}", fmt::join(programs, "\n"));
}

std::vector<SandboxResult> run_programs(const std::vector<std::string>& programs, const SandboxOptions& sandbox,
                                        int64_t jobs) {
  std::vector<SandboxResult> results(programs.size());
  const auto workers = static_cast<size_t>(std::min<int64_t>(jobs > 0 ? jobs : usable_cpus(), programs.size()));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k; (k = next++) < programs.size();) {
      try {
        results[k] = run_python(programs[k], sandbox);
      } catch (const std::exception& e) {  // e.g. fork failing for want of memory: this program's verdict only
        results[k].status = SandboxResult::Status::Unavailable;
        results[k].message = e.what();
      }
    }
  };
  std::vector<std::thread> pool;
  try {
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  } catch (...) {  // no more threads: the ones started finish the work
  }
  work();
  for (auto& t : pool) t.join();
  return results;
}

std::vector<Solution> solve_items(const std::vector<std::string>& prompts, const GenerateBatch& generate,
                                  const SuiteOptions& o) {
  std::vector<Solution> solutions(prompts.size());
  std::vector<std::string> work(prompts.size());  // each item's completion so far
  std::vector<size_t> active(prompts.size());     // the items still working
  for (size_t i = 0; i < active.size(); ++i) active[i] = i;
  const bool tools = o.style == PromptStyle::ToolIntegrated;
  const int64_t rounds = tools ? std::max<int64_t>(1, o.max_tool_calls) : 1;
  for (int64_t round = 0; round < rounds && !active.empty(); ++round) {
    std::vector<std::string> texts;
    for (size_t i : active) texts.push_back(prompts[i] + work[i]);
    const auto outs = generate(texts, active);
    if (outs.size() != active.size()) throw Error("solve_items: the generator returned the wrong number of texts");
    std::vector<size_t> ran;  // the items whose program runs in this round
    std::vector<std::string> programs;
    for (size_t j = 0; j < active.size(); ++j) {
      const size_t i = active[j];
      const std::string out = rtrim(outs[j]);
      work[i] += out;
      if (!tools || out.find("boxed") != std::string::npos || !ends_with(out, "```")) continue;  // no program to run
      ran.push_back(i);
      programs.push_back(program_to_run(work[i]));
    }
    const auto runs = run_programs(programs, o.sandbox, o.tool_jobs);
    std::vector<size_t> still;
    for (size_t k = 0; k < ran.size(); ++k) {
      const size_t i = ran[k];
      solutions[i].tool_status.push_back(status_name(runs[k].status));
      solutions[i].missing_module = solutions[i].missing_module || runs[k].missing_module;
      work[i] += "\n```output\n" + tool_output(runs[k]) + "\n```\n";
      if (round == rounds - 1)
        work[i] += "\nReach max function call limit.";
      else
        still.push_back(i);
    }
    active = std::move(still);
  }
  for (size_t i = 0; i < prompts.size(); ++i) solutions[i].completion = trim(work[i]);
  return solutions;
}

namespace {
// run_benchmark's model calls: each round of solve_items decoded as one continuous batch, with a progress line
// per round (with chain of thought, the running accuracy) and each item's generation figures.
struct SuiteGenerator {
  struct Tally {  // an item's generation calls: its first prompt's tokens, all new tokens, the last stop reason
    int64_t prompt_tokens = 0, new_tokens = 0;
    std::string stop_reason;
    bool truncated = false;
    std::optional<BenchmarkRecord> graded;  // chain of thought with progress: the record the progress line counted
  };
  LlamaImpl& model;
  const TextTokenizer& tok;
  const BenchmarkSet& set;
  Benchmark which;
  const SuiteOptions& o;
  std::vector<Tally> tally;  // per item
  int64_t round = 0;

  std::vector<std::string> operator()(const std::vector<std::string>& texts, const std::vector<size_t>& items) {
    const bool tools = o.style == PromptStyle::ToolIntegrated;
    ++round;
    Progress progress(tools ? fmt::format("{} (tool-integrated, round {})", name_of(which), round)
                            : fmt::format("{} (cot)", name_of(which)),
                      static_cast<int64_t>(texts.size()), "item");
    int64_t finished = 0, correct = 0;
    TextGenerateOptions to;
    to.stops = benchmark_stop_strings(o.style);
    to.max_new_tokens = o.max_new_tokens;
    to.add_bos = o.add_bos;
    to.batching = o.batching;
    to.on_finish = [&](size_t j, const TextGeneration& g) {
      auto& t = tally[items[j]];
      if (t.prompt_tokens == 0) t.prompt_tokens = g.prompt_tokens;
      t.new_tokens += g.new_tokens;
      t.stop_reason = g.stop_reason;
      t.truncated = t.truncated || g.truncated;
      ++finished;
      if (o.progress && tools) {
        progress.update(finished);
      } else if (o.progress) {  // chain of thought: this generation is the item's completion (as solve_items makes it)
        t.graded = record_of(set.items[items[j]], which, trim(g.text));
        correct += t.graded->correct;
        progress.update(finished, accuracy(correct, finished));
      }
    };
    std::vector<std::string> outs;
    for (auto& g : generate_texts(model, tok, texts, to)) outs.push_back(std::move(g.text));
    if (o.progress) progress.finish(tools ? "" : accuracy(correct, finished));
    return outs;
  }

  static std::string accuracy(int64_t correct, int64_t items) {
    return fmt::format("accuracy {:.3f}", items ? static_cast<double>(correct) / items : 0.0);
  }
};
}  // namespace

BenchmarkResult run_benchmark(LlamaImpl& model, const TextTokenizer& tok, Benchmark b, const SuiteOptions& o) {
  if (tok.vocab_size() > model.config.vocab_size)
    throw Error(fmt::format("{}: the tokenizer has {} pieces but the model's vocab_size is {}", tok.path(),
                            tok.vocab_size(), model.config.vocab_size));
  const int64_t max_pos = model.config.max_position_embeddings;
  if (o.max_new_tokens < 1 || o.max_new_tokens >= max_pos)
    throw Error(fmt::format("max_new_tokens {} must be in [1, max_position_embeddings={})", o.max_new_tokens, max_pos));
  if (o.batching.batch_size < 1) throw Error(fmt::format("batch_size {} must be >= 1", o.batching.batch_size));
  if (o.style == PromptStyle::ToolIntegrated)
    if (const auto why = sandbox_unavailable_reason(); !why.empty()) throw Error(why);
  if (o.shards < 1 || o.shard < 0 || o.shard >= o.shards)
    throw Error(fmt::format("shard {} of {}: need 0 <= shard < shards", o.shard, o.shards));
  const auto t0 = std::chrono::steady_clock::now();
  const auto it = o.data_files.find(name_of(b));
  auto set = load_benchmark(b, o.style, o.eval_dir, it == o.data_files.end() ? "" : it->second, o.limit);
  if (o.shards > 1) {  // this process's share
    std::vector<BenchmarkItem> mine;
    for (size_t i = static_cast<size_t>(o.shard); i < set.items.size(); i += static_cast<size_t>(o.shards))
      mine.push_back(std::move(set.items[i]));
    set.items = std::move(mine);
  }
  if (set.prompt_file.empty())
    throw Error(fmt::format("{}: the few-shot prompts come from the evaluation folder (--eval-dir)", name_of(b)));
  BenchmarkResult r;
  r.which = b;
  r.style = o.style;
  r.data_file = set.data_file;
  r.prompt_file = set.prompt_file;
  const size_t n = set.items.size();
  std::vector<std::string> prompts;
  for (const auto& item : set.items) prompts.push_back(benchmark_prompt(set, item, o.style));
  SuiteGenerator generate{model, tok, set, b, o, std::vector<SuiteGenerator::Tally>(n)};
  auto solutions = solve_items(
      prompts, [&](const std::vector<std::string>& texts, const std::vector<size_t>& items) { return generate(texts, items); },
      o);
  for (size_t i = 0; i < n; ++i) {
    auto& gen = generate.tally[i];
    // Graded once: the progress line's record is the item's when it graded the same completion.
    auto rec = gen.graded && gen.graded->completion == solutions[i].completion
                   ? std::move(*gen.graded)
                   : record_of(set.items[i], b, solutions[i].completion);
    rec.stop_reason = gen.stop_reason;
    rec.prompt_tokens = gen.prompt_tokens;
    rec.new_tokens = gen.new_tokens;
    rec.tool_status = std::move(solutions[i].tool_status);
    rec.missing_module = solutions[i].missing_module;
    r.correct += rec.correct;
    r.truncated_prompts += gen.truncated;
    r.missing_module += rec.missing_module;
    r.records.push_back(std::move(rec));
  }
  r.seconds = seconds_since(t0);
  return r;
}

BenchmarkResult grade_benchmark(Benchmark b, const SuiteOptions& o, const std::map<std::string, std::string>& completions,
                                const std::string& source) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto it = o.data_files.find(name_of(b));
  const auto set = load_benchmark(b, PromptStyle::Cot, o.eval_dir, it == o.data_files.end() ? "" : it->second, 0);
  std::map<std::string, const BenchmarkItem*> by_id;
  for (const auto& item : set.items) by_id[item.id] = &item;
  BenchmarkResult r;
  r.which = b;
  r.style = o.style;
  r.data_file = set.data_file;
  r.prompt_file = "";
  for (const auto& [id, completion] : completions) {
    const auto at = by_id.find(id);
    if (at == by_id.end()) throw Error(fmt::format("{}: {} has no item with idx {}", source, name_of(b), id));
    auto rec = record_of(*at->second, b, completion);
    rec.stop_reason = "given";
    r.correct += rec.correct;
    r.records.push_back(std::move(rec));
  }
  // In the test file's order.
  std::map<std::string, int64_t> order;
  for (size_t i = 0; i < set.items.size(); ++i) order[set.items[i].id] = static_cast<int64_t>(i);
  std::sort(r.records.begin(), r.records.end(), [&](const auto& x, const auto& y) { return order[x.id] < order[y.id]; });
  r.seconds = seconds_since(t0);
  return r;
}

std::vector<Benchmark> choose_benchmarks(const std::vector<std::string>& values, const SuiteOptions& o) {
  namespace fs = std::filesystem;
  std::vector<Benchmark> out;
  for (const auto& value : values) {
    size_t from = 0;
    while (from <= value.size()) {
      const size_t comma = std::min(value.find(',', from), value.size());
      const std::string name = value.substr(from, comma - from);
      from = comma + 1;
      if (name.empty()) continue;
      if (name == "all") {
        for (const auto& [b, n] : kBenchmarkNames) {
          const auto& spec = benchmark_spec(b);
          const bool has_prompt = o.style == PromptStyle::Cot || *spec.tool_prompt != '\0';
          const bool has_data = o.data_files.count(n) || fs::exists(fs::path(o.eval_dir) / spec.data);
          if (has_prompt && has_data && std::find(out.begin(), out.end(), b) == out.end()) out.push_back(b);
        }
        continue;
      }
      const auto b = enum_from_name(kBenchmarkNames, name);
      if (!b) throw Error(fmt::format("--bench {}: not a benchmark (one of: {}, all)", name, enum_names(kBenchmarkNames)));
      if (std::find(out.begin(), out.end(), *b) == out.end()) out.push_back(*b);
    }
  }
  if (out.empty()) throw Error("--bench: no benchmark chosen (with \"all\": no test set found under --eval-dir)");
  return out;
}

std::map<Benchmark, std::map<std::string, std::string>> read_completions(const std::string& path,
                                                                           const std::vector<Benchmark>& chosen) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  std::map<Benchmark, std::map<std::string, std::string>> out;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, line);
    json v = JsonFields{where}.parse_object(text);
    Benchmark b;
    if (v.contains("benchmark")) {
      const auto named = v["benchmark"].is_string() ? enum_from_name(kBenchmarkNames, v["benchmark"].get<std::string>())
                                                    : std::nullopt;
      if (!named) throw Error(fmt::format("{}: field 'benchmark' must be one of: {}", where, enum_names(kBenchmarkNames)));
      b = *named;
      if (std::find(chosen.begin(), chosen.end(), b) == chosen.end())
        throw Error(fmt::format("{}: benchmark {} is not among --bench", where, v["benchmark"].get<std::string>()));
    } else if (chosen.size() == 1) {
      b = chosen[0];
    } else {
      throw Error(fmt::format("{}: field 'benchmark' is missing (needed when --bench names several)", where));
    }
    if (!v.contains("idx") || !(v["idx"].is_string() || v["idx"].is_number_integer()))
      throw Error(fmt::format("{}: field 'idx' must be the item's idx (a string or an integer)", where));
    if (!v.contains("completion") || !v["completion"].is_string())
      throw Error(fmt::format("{}: field 'completion' must be a string", where));
    const std::string idx = v["idx"].is_string() ? v["idx"].get<std::string>() : v["idx"].dump();
    if (!out[b].emplace(idx, v["completion"].get<std::string>()).second)
      throw Error(fmt::format("{}: idx {} of {} given twice", where, idx, enum_name(kBenchmarkNames, b)));
  }
  return out;
}
std::string suite_markdown(const std::vector<BenchmarkResult>& results) {
  std::string s = "| benchmark | style | items | correct | accuracy (%) |\n| --- | --- | ---: | ---: | ---: |\n";
  double sum = 0;
  for (const auto& r : results) {
    s += fmt::format("| {} | {} | {} | {} | {:.1f} |\n", name_of(r.which), enum_name(kPromptStyleNames, r.style),
                     r.records.size(), r.correct, 100 * r.accuracy());
    sum += r.accuracy();
  }
  if (results.size() > 1) s += fmt::format("| average | | | | {:.1f} |\n", 100 * sum / results.size());
  return s;
}

namespace {
// A record's fields in the per-item JSON, in order: record_json writes them, record_from_json reads them back.
template <class Record, class Field>
void for_each_record_field(Record& rec, Field&& field) {
  field("idx", rec.id);
  field("line", rec.line);
  field("question", rec.question);
  field("completion", rec.completion);
  field("predicted", rec.predicted);
  field("gold", rec.gold);
  field("correct", rec.correct);
  field("stop_reason", rec.stop_reason);
  field("prompt_tokens", rec.prompt_tokens);
  field("new_tokens", rec.new_tokens);
  field("tool_runs", rec.tool_status);
  field("missing_module", rec.missing_module);
}

json record_json(const BenchmarkResult& r, const BenchmarkRecord& rec) {
  json j{{"benchmark", name_of(r.which)}, {"style", enum_name(kPromptStyleNames, r.style)}};
  for_each_record_field(rec, [&](const char* key, const auto& value) { j[key] = value; });
  return j;
}

BenchmarkRecord record_from_json(const json& j) {
  BenchmarkRecord rec;
  for_each_record_field(rec, [&](const char* key, auto& value) { j.at(key).get_to(value); });
  return rec;
}
}  // namespace

std::string suite_records_jsonl(const std::vector<BenchmarkResult>& results) {
  std::string out;
  for (const auto& r : results)
    for (const auto& rec : r.records)
      out += record_json(r, rec).dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  return out;
}

std::string suite_part_json(const std::vector<BenchmarkResult>& results) {
  json all = json::array();
  for (const auto& r : results) {
    json records = json::array();
    for (const auto& rec : r.records) records.push_back(record_json(r, rec));
    all.push_back({{"benchmark", name_of(r.which)},
                   {"style", enum_name(kPromptStyleNames, r.style)},
                   {"data_file", r.data_file},
                   {"prompt_file", r.prompt_file},
                   {"correct", r.correct},
                   {"truncated_prompts", r.truncated_prompts},
                   {"missing_module", r.missing_module},
                   {"seconds", r.seconds},
                   {"records", records}});
  }
  return all.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::vector<BenchmarkResult> merge_suite_parts(const std::vector<std::string>& parts,
                                               const std::vector<std::string>& sources) {
  std::vector<BenchmarkResult> merged;
  for (size_t p = 0; p < parts.size(); ++p) {
    const std::string& source = p < sources.size() ? sources[p] : fmt::format("part {}", p);
    try {
      const json doc = json::parse(parts[p]);
      if (!doc.is_array()) throw Error("not a JSON array of benchmarks");
      if (p > 0 && doc.size() != merged.size())
        throw Error(fmt::format("{} benchmarks where the first part has {}", doc.size(), merged.size()));
      for (size_t i = 0; i < doc.size(); ++i) {
        const json& b = doc[i];
        const auto which = enum_from_name(kBenchmarkNames, b.at("benchmark").get<std::string>());
        const auto style = enum_from_name(kPromptStyleNames, b.at("style").get<std::string>());
        if (!which || !style) throw Error(fmt::format("benchmark {}: unknown name or style", i));
        if (p == 0) {
          merged.emplace_back();
          merged[i].which = *which;
          merged[i].style = *style;
          merged[i].data_file = b.at("data_file").get<std::string>();
          merged[i].prompt_file = b.at("prompt_file").get<std::string>();
        } else if (merged[i].which != *which || merged[i].style != *style) {
          throw Error(fmt::format("benchmark {} is {} ({}) where the first part has {} ({})", i, name_of(*which),
                                  b.at("style").get<std::string>(), name_of(merged[i].which),
                                  enum_name(kPromptStyleNames, merged[i].style)));
        }
        auto& r = merged[i];
        r.correct += b.at("correct").get<int64_t>();
        r.truncated_prompts += b.at("truncated_prompts").get<int64_t>();
        r.missing_module += b.at("missing_module").get<int64_t>();
        r.seconds = std::max(r.seconds, b.at("seconds").get<double>());
        for (const auto& rec : b.at("records")) r.records.push_back(record_from_json(rec));
      }
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}", source, e.what()));
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}: not a suite part ({})", source, e.what()));
    }
  }
  for (auto& r : merged) {  // the test file's order; an item in two parts means parts of different splits
    std::stable_sort(r.records.begin(), r.records.end(), [](const auto& x, const auto& y) { return x.line < y.line; });
    for (size_t i = 1; i < r.records.size(); ++i)
      if (r.records[i].line == r.records[i - 1].line)
        throw Error(fmt::format("{}: line {} of {} is in two parts", name_of(r.which), r.records[i].line, r.data_file));
  }
  return merged;
}

std::string suite_part_path(const std::string& prefix, int64_t shard, int64_t shards) {
  return fmt::format("{}.part-{}-of-{}", prefix, shard, shards);
}

void write_suite_part(const std::string& prefix, int64_t shard, int64_t shards, const std::string& run_key,
                      const std::vector<BenchmarkResult>& results) {
  // The key on a line of its own before the results: a reader checks it without parsing the rest.
  write_file_atomic(suite_part_path(prefix, shard, shards), run_key + "\n" + suite_part_json(results));
}

std::optional<std::vector<BenchmarkResult>> collect_suite_parts(const std::string& prefix, int64_t shards,
                                                                const std::string& run_key,
                                                                std::vector<std::string>* missing) {
  // Only each part's first line (its key) while one is missing: a waiting caller asks again and again, and the
  // results, which hold every completion, are read once.
  std::vector<std::string> sources, absent;
  for (int64_t shard = 0; shard < shards; ++shard) {
    const auto path = suite_part_path(prefix, shard, shards);
    std::ifstream in(path);
    std::string key;
    if (!in || !std::getline(in, key) || key != run_key)  // not there, or another run's
      absent.push_back(path);
    else
      sources.push_back(path);
  }
  if (missing) *missing = absent;
  if (!absent.empty()) return std::nullopt;
  std::vector<std::string> parts;
  for (const auto& path : sources) {
    const auto text = read_text_file(path);
    const auto newline = text.find('\n');
    if (newline == std::string::npos || text.compare(0, newline, run_key) != 0) {  // replaced since
      if (missing) *missing = {path};
      return std::nullopt;
    }
    parts.push_back(text.substr(newline + 1));
  }
  return merge_suite_parts(parts, sources);
}

}  // namespace rho
