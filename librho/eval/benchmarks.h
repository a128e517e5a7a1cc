#pragma once
// The Rho-1 math benchmark suite, run as the seed's evaluation harness (math-evaluation-harness) runs it:
// each benchmark's test file, its few-shot prompt, its question layout, greedy decoding with its stop strings,
// its answer rules (math_answer.h) and its judge (judge.h). Chain-of-thought ("cot") for every benchmark;
// tool-integrated reasoning ("tool-integrated", ToRA's format) for the free-form ones: the model writes a
// ```python block, librho runs it in the sandbox (sandbox.h) and appends its output as an ```output block, for
// up to max_tool_calls rounds. docs/eval.md has the table of benchmarks and rules.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "librho/eval/lm.h"
#include "librho/eval/sandbox.h"
#include "librho/eval/text_tokenizer.h"
#include "librho/model/llama.h"

namespace rho {

enum class Benchmark { Gsm8k, Math, MinervaMath, Svamp, Asdiv, Mawps, GsmHard, Tabmwp, Mathqa, MmluStem, SatMath };
inline constexpr std::pair<Benchmark, const char*> kBenchmarkNames[] = {
    {Benchmark::Gsm8k, "gsm8k"},       {Benchmark::Math, "math"},         {Benchmark::MinervaMath, "minerva_math"},
    {Benchmark::Svamp, "svamp"},       {Benchmark::Asdiv, "asdiv"},       {Benchmark::Mawps, "mawps"},
    {Benchmark::GsmHard, "gsm_hard"},  {Benchmark::Tabmwp, "tabmwp"},     {Benchmark::Mathqa, "mathqa"},
    {Benchmark::MmluStem, "mmlu_stem"}, {Benchmark::SatMath, "sat_math"}};

enum class PromptStyle { Cot, ToolIntegrated };
inline constexpr std::pair<PromptStyle, const char*> kPromptStyleNames[] = {{PromptStyle::Cot, "cot"},
                                                                            {PromptStyle::ToolIntegrated, "tool-integrated"}};

// One row of the suite's table.
struct BenchmarkSpec {
  Benchmark which;
  const char* data;         // the test set under the evaluation folder
  const char* cot_prompt;   // few-shot prompt for chain of thought
  const char* tool_prompt;  // few-shot prompt for tool-integrated reasoning; "" when there is none
  bool problem_layout;      // "Problem:\n{q}\nSolution:" (else "Question: {q}\nAnswer:")
  bool multiple_choice;     // the answer is a letter (A-E)
};
const BenchmarkSpec& benchmark_spec(Benchmark b);

struct BenchmarkItem {
  std::string id;             // the item's "idx", or its 0-based position when the file has none
  int64_t line = 0;
  std::string question;       // laid out as the harness does (options and "(Yes or No)" included)
  std::string gold;           // the reference answer, normalised (strip_math_answer)
  std::string gold_solution;  // the reference's worked solution or equation, when the data has one
};

struct BenchmarkSet {
  Benchmark which = Benchmark::Gsm8k;
  std::string data_file, prompt_file;
  std::string fewshot;  // the prompt file's text, trimmed, then "\n\n\n"
  std::vector<BenchmarkItem> items;
};

// The items of `data_file` (or, when empty, of eval_dir/spec.data) and the style's prompt from eval_dir.
// Errors name the file, the line and the field.
BenchmarkSet load_benchmark(Benchmark b, PromptStyle style, const std::string& eval_dir, const std::string& data_file,
                            int64_t limit = 0);

// Few-shot text + the item laid out for the style.
std::string benchmark_prompt(const BenchmarkSet& set, const BenchmarkItem& item, PromptStyle style);

// Generation stops at these (and at EOS): cot "\n\nQuestion:", "\n\nProblem:"; tool-integrated "\n\n---",
// "```output".
std::vector<std::string> benchmark_stop_strings(PromptStyle style);

// The answer a completion gives, as the harness reads it for this benchmark (normalised).
std::string predicted_answer(Benchmark b, const std::string& completion);

// The program to run after a tool-integrated completion's latest ```python block: the earlier blocks whose
// output shows no error, without their print lines, then the latest one; import lines of failed blocks first.
std::string program_to_run(const std::string& completion);

struct SuiteOptions {
  std::string eval_dir;                           // the harness's layout: NAME/test.jsonl, prompts/STYLE/NAME.md
  std::map<std::string, std::string> data_files;  // benchmark name -> its test file, instead of eval_dir's
  PromptStyle style = PromptStyle::Cot;
  int64_t max_new_tokens = 1024;  // per generation call (the harness's max_tokens_per_call)
  int64_t max_tool_calls = 4;     // tool-integrated rounds (the harness's max_func_call)
  int64_t tool_jobs = 0;          // tool-integrated: programs run at once within a round; 0: one per usable CPU
  BatchDecoding batching{8};      // generate_texts: 8 sequences decoded together
  int64_t limit = 0;              // > 0: the first `limit` items of each benchmark
  // One process's share of a run split across `shards` processes: the items i (0-based, after `limit`) with
  // i % shards == shard. Interleaved, so that every share holds items from the whole file.
  int64_t shard = 0, shards = 1;
  bool add_bos = true;
  bool progress = true;
  SandboxOptions sandbox;
};

// Runs the programs in the sandbox, `jobs` at a time (0: one per CPU this process may use), each in its own
// process; results in the programs' order. A program the sandbox cannot start (fork failing) gets the verdict
// Unavailable with the reason, and the others run.
std::vector<SandboxResult> run_programs(const std::vector<std::string>& programs, const SandboxOptions& sandbox,
                                        int64_t jobs = 0);

// Items' completions, solved together. Chain of thought: one generation per item. Tool-integrated: while an
// item's continuation ends with a ```python block (and gives no \boxed answer), the program runs in the sandbox
// and "```output\n<its stdout, or its error's last line>\n```" is appended, then the item is generated again from
// the prompt and its work so far; after max_tool_calls programs, "Reach max function call limit." ends it. The
// harness's rules, as its math_eval.py loop has them. Each round, one call of `generate` continues every item
// still working (texts[j] is item items[j]'s prompt + work so far; it returns each continuation, stop strings cut),
// so the model decodes them in one batch; the round's programs then run o.tool_jobs at a time (run_programs).
struct Solution {
  std::string completion;                // trimmed
  std::vector<std::string> tool_status;  // per program run
  bool missing_module = false;
};
using GenerateBatch =
    std::function<std::vector<std::string>(const std::vector<std::string>& texts, const std::vector<size_t>& items)>;
std::vector<Solution> solve_items(const std::vector<std::string>& prompts, const GenerateBatch& generate,
                                  const SuiteOptions& o);

struct BenchmarkRecord {
  std::string id;
  int64_t line = 0;
  std::string question, completion, predicted, gold;
  bool correct = false;
  std::string stop_reason;  // of the last generation call ("given" when graded from a file)
  int64_t prompt_tokens = 0, new_tokens = 0;
  std::vector<std::string> tool_status;  // per program run: ok, error, cpu_limit, ...
  bool missing_module = false;           // a program failed for a module the interpreter lacks
};

struct BenchmarkResult {
  Benchmark which = Benchmark::Gsm8k;
  PromptStyle style = PromptStyle::Cot;
  std::string data_file, prompt_file;
  std::vector<BenchmarkRecord> records;
  int64_t correct = 0, truncated_prompts = 0, missing_module = 0;
  double seconds = 0;
  double accuracy() const { return records.empty() ? 0.0 : double(correct) / records.size(); }
};


BenchmarkResult run_benchmark(LlamaImpl& model, const TextTokenizer& tokenizer, Benchmark b, const SuiteOptions& o);

// Grades given completions (item id -> completion) with the same rules; an id the benchmark lacks is an error
// naming `source`.
BenchmarkResult grade_benchmark(Benchmark b, const SuiteOptions& o, const std::map<std::string, std::string>& completions,
                                const std::string& source);

// Benchmarks named on a command line: names, comma lists, or "all" (every benchmark whose test set is there, in
// o.data_files or under o.eval_dir, and that has a prompt for o.style); each once, in the order given. Errors
// name the value.
std::vector<Benchmark> choose_benchmarks(const std::vector<std::string>& values, const SuiteOptions& o);

// Completions to grade, from JSON Lines of {"benchmark", "idx", "completion"} ("benchmark" may be left out when
// `chosen` has one benchmark): benchmark -> idx -> completion. Errors name the file, the line and the field.
std::map<Benchmark, std::map<std::string, std::string>> read_completions(const std::string& path,
                                                                      const std::vector<Benchmark>& chosen);

// The seed's summary table (benchmark, items, accuracy in %, and the average), as Markdown.
std::string suite_markdown(const std::vector<BenchmarkResult>& results);
// Per-item JSON Lines: benchmark, idx, question, completion, predicted, gold, correct, and generation figures.
std::string suite_records_jsonl(const std::vector<BenchmarkResult>& results);

// A run split across processes (SuiteOptions::shard): each process's results as one JSON document (every field of
// the results and their records), and the whole run rebuilt from every process's document: each benchmark's
// records in the test file's order, the counts summed, the seconds the slowest process's. Every part must hold
// the same benchmarks in the same order; errors name the part (`sources`, one per part).
std::string suite_part_json(const std::vector<BenchmarkResult>& results);
std::vector<BenchmarkResult> merge_suite_parts(const std::vector<std::string>& parts,
                                               const std::vector<std::string>& sources);
// The files of a split run: process `shard` writes its part to suite_part_path(prefix, shard, shards) (atomically,
// tagged with `run_key`, which says which launch and what it evaluated); collect_suite_parts merges the parts once
// all `shards` of them are there with that key, and gives nothing while one is missing or another run's (its
// process has not finished yet), listing those in `missing` when given.
std::string suite_part_path(const std::string& prefix, int64_t shard, int64_t shards);
void write_suite_part(const std::string& prefix, int64_t shard, int64_t shards, const std::string& run_key,
                      const std::vector<BenchmarkResult>& results);
std::optional<std::vector<BenchmarkResult>> collect_suite_parts(const std::string& prefix, int64_t shards,
                                                                const std::string& run_key,
                                                                std::vector<std::string>* missing = nullptr);

}  // namespace rho
