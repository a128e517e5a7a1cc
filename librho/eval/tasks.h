#pragma once
// Evaluation tasks over files, and the report rho_eval prints and writes:
//   - held-out loss / perplexity of token datasets (see heldout_loss in lm.h);
//   - few-shot generation: prompt = few-shot text + separator + template filled from a JSON Lines item, greedy
//     generation until a stop rule, answer extraction (answer.h) and exact match against the item's answer;
//   - multiple choice by likelihood: the choice with the highest total log-probability given the prompt (and,
//     separately, the highest log-probability per UTF-8 byte of the choice).
// docs/eval.md describes the file formats and rules.
#include <cstdint>
#include <string>
#include <vector>

#include "librho/eval/benchmarks.h"
#include "librho/eval/lm.h"
#include "librho/eval/text_tokenizer.h"
#include "librho/model/llama.h"

namespace rho {

// "{name}" in `tmpl` replaced by field `name` of the JSON object `item_json` (a string, or a number as JSON
// writes it); a missing field is a rho::Error naming `source` ("file:line") and the field. Braces not around a
// field name ([A-Za-z0-9_]+) are kept as they are.
std::string fill_template(const std::string& tmpl, const std::string& item_json, const std::string& source);

// Command-line escapes in settings: "\n", "\t" and "\\".
std::string unescape(const std::string& s);

struct FewShotOptions {
  std::string items;                  // JSON Lines with the template's fields and answer_field
  std::string prompt_file;            // the few-shot examples; empty: zero-shot
  std::string template_text = "Question: {question}\nAnswer:";
  std::string separator = "\n\n\n";   // between the few-shot text (trailing whitespace trimmed) and the item
  std::string answer_field = "answer";
  std::vector<std::string> stop = {"\n\nQuestion:"};  // generation ends when the text contains one (cut there)
  int64_t max_new_tokens = 256;
  int64_t limit = 0;                  // > 0: the first `limit` items only
  bool add_bos = true;                // prepend BOS when the tokenizer has one (as rho_tokenize does)
  BatchDecoding batching{8};          // generate_texts: 8 sequences decoded together
  bool progress = true;
};

struct FewShotPrediction {
  int64_t line = 0;
  std::string question;     // the filled template (without the few-shot text)
  std::string generation;   // decoded, cut at the stop string
  std::string predicted, gold;  // extracted answers, normalised
  bool correct = false;
  std::string stop_reason;
  int64_t prompt_tokens = 0, new_tokens = 0;
};

struct FewShotResult {
  FewShotOptions options;
  std::vector<FewShotPrediction> predictions;
  int64_t correct = 0;
  int64_t truncated_prompts = 0;  // prompts cut from the left to leave max_new_tokens positions
  double seconds = 0;
  double accuracy() const { return predictions.empty() ? 0.0 : double(correct) / predictions.size(); }
};

FewShotResult run_fewshot(LlamaImpl& model, const TextTokenizer& tokenizer, const FewShotOptions& options);

struct ChoiceOptions {
  std::string items;        // JSON Lines: template fields, choices_field (array of strings), answer_field
  std::string prompt_file;  // optional few-shot text, as for FewShotOptions
  std::string template_text = "Question: {question}\nAnswer:";
  std::string separator = "\n\n\n";
  std::string choices_field = "choices";
  std::string answer_field = "answer";  // index of the right choice (0-based), or its text
  int64_t limit = 0;
  bool add_bos = true;
  bool progress = true;
};

struct ChoicePrediction {
  int64_t line = 0;
  std::vector<double> logprob;         // total log-probability of each choice
  std::vector<int64_t> bytes, tokens;  // each choice's UTF-8 bytes and tokens
  int64_t gold = 0, predicted = 0, predicted_norm = 0;
};

struct ChoiceResult {
  ChoiceOptions options;
  std::vector<ChoicePrediction> predictions;
  int64_t correct = 0, correct_norm = 0;
  double seconds = 0;
  double accuracy() const { return predictions.empty() ? 0.0 : double(correct) / predictions.size(); }
  double accuracy_norm() const { return predictions.empty() ? 0.0 : double(correct_norm) / predictions.size(); }
};

ChoiceResult run_choice(LlamaImpl& model, const TextTokenizer& tokenizer, const ChoiceOptions& options);

struct LossResult {
  std::string name, dir;
  HeldoutLoss loss;
  int64_t seq_len = 0;
};

struct EvalReport {
  std::string model_dir, model_sha256, tokenizer, device;
  std::vector<LossResult> losses;
  std::vector<FewShotResult> fewshot;
  std::vector<ChoiceResult> choice;
  std::vector<BenchmarkResult> suite;  // the math benchmark suite (benchmarks.h), run or graded
  std::string table() const;    // for the terminal
  std::string to_json() const;  // every figure, settings and per-item predictions
};

}  // namespace rho
