#include "librho/eval/tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "librho/eval/answer.h"
#include "librho/util/enum_names.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/json_fields.h"
#include "librho/util/progress.h"

namespace rho {
namespace {
using json = nlohmann::json;

std::string field_text(const json& item, const std::string& field, const std::string& source) {
  const auto it = item.find(field);
  if (it == item.end()) throw Error(fmt::format("{}: field '{}' is missing", source, field));
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  throw Error(fmt::format("{}: field '{}' must be a string or a number", source, field));
}

std::string fill(const std::string& tmpl, const json& item, const std::string& source) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    const size_t open = tmpl.find('{', i);
    if (open == std::string::npos) break;
    size_t close = open + 1;
    while (close < tmpl.size() && (std::isalnum(static_cast<unsigned char>(tmpl[close])) || tmpl[close] == '_')) ++close;
    out.append(tmpl, i, open - i);
    if (close < tmpl.size() && tmpl[close] == '}' && close > open + 1) {
      out += field_text(item, tmpl.substr(open + 1, close - open - 1), source);
      i = close + 1;
    } else {
      out += '{';
      i = open + 1;
    }
  }
  out.append(tmpl, i, std::string::npos);
  return out;
}

// The few-shot text (trailing whitespace trimmed) and the separator, or "" for zero-shot.
std::string prompt_prefix(const std::string& prompt_file, const std::string& separator) {
  if (prompt_file.empty()) return "";
  auto text = read_text_file(prompt_file);
  text.erase(text.find_last_not_of(" \t\r\n") + 1);
  return text + separator;
}

std::vector<int64_t> prompt_ids(const TextTokenizer& tok, const std::string& text, bool add_bos) {
  std::vector<int64_t> ids;
  if (add_bos && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  const auto body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

void check_vocab(const LlamaImpl& model, const TextTokenizer& tok) {
  if (tok.vocab_size() > model.config.vocab_size)
    throw Error(fmt::format("{}: the tokenizer has {} pieces but the model's vocab_size is {}", tok.path(),
                            tok.vocab_size(), model.config.vocab_size));
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::string stem(const std::string& path) { return std::filesystem::path(path).stem().string(); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

std::string fill_template(const std::string& tmpl, const std::string& item_json, const std::string& source) {
  return fill(tmpl, JsonFields{source}.parse_object(item_json), source);
}

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'n' || s[i + 1] == 't' || s[i + 1] == '\\')) {
      out += s[i + 1] == 'n' ? '\n' : s[i + 1] == 't' ? '\t' : '\\';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

FewShotResult run_fewshot(LlamaImpl& model, const TextTokenizer& tok, const FewShotOptions& options) {
  check_vocab(model, tok);
  const int64_t max_pos = model.config.max_position_embeddings;
  if (options.max_new_tokens < 1 || options.max_new_tokens >= max_pos)
    throw Error(fmt::format("few-shot max_new_tokens {} must be in [1, max_position_embeddings={})",
                            options.max_new_tokens, max_pos));
  if (options.batching.batch_size < 1)
    throw Error(fmt::format("few-shot batch_size {} must be >= 1", options.batching.batch_size));
  const auto t0 = std::chrono::steady_clock::now();
  const auto items = read_json_lines(options.items, options.limit);
  const auto prefix = prompt_prefix(options.prompt_file, options.separator);
  FewShotResult r;
  r.options = options;
  std::vector<std::string> prompts;
  for (const auto& item : items) {
    FewShotPrediction p;
    p.line = item.line;
    p.question = fill(options.template_text, item.value, item.source);
    p.gold = normalize_answer(extract_answer(field_text(item.value, options.answer_field, item.source)));
    if (p.gold.empty())
      throw Error(fmt::format("{}: field '{}' holds no answer (no number found)", item.source, options.answer_field));
    prompts.push_back(prefix + p.question);
    r.predictions.push_back(std::move(p));
  }
  Progress progress("few-shot " + stem(options.items), static_cast<int64_t>(items.size()), "item");
  int64_t finished = 0;
  TextGenerateOptions gen;
  gen.stops = options.stop;
  gen.max_new_tokens = options.max_new_tokens;
  gen.add_bos = options.add_bos;
  gen.batching = options.batching;
  gen.on_finish = [&](size_t i, const TextGeneration& g) {
    auto& p = r.predictions[i];
    p.prompt_tokens = g.prompt_tokens;
    p.new_tokens = g.new_tokens;
    p.stop_reason = g.stop_reason;
    p.generation = g.text;
    r.truncated_prompts += g.truncated;
    p.predicted = normalize_answer(extract_answer(p.generation));
    p.correct = answers_match(p.predicted, p.gold);
    r.correct += p.correct;
    ++finished;
    if (options.progress) progress.update(finished, fmt::format("accuracy {:.3f}", double(r.correct) / finished));
  };
  generate_texts(model, tok, prompts, gen);
  if (options.progress) progress.finish(fmt::format("accuracy {:.3f}", r.accuracy()));
  r.seconds = seconds_since(t0);
  return r;
}

namespace {
// A multiple-choice item, read and encoded: errors name the file, the line and the field.
struct ChoiceItem {
  int64_t line = 0, gold = -1;
  std::vector<std::string> choices;
  std::vector<int64_t> prompt;
  std::vector<std::vector<int64_t>> continuations;  // each choice encoded on its own
};

ChoiceItem read_choice_item(const JsonLine& item, const TextTokenizer& tok, const std::string& prefix,
                            const ChoiceOptions& options, int64_t max_positions) {
  ChoiceItem c;
  c.line = item.line;
  const auto choices_it = item.value.find(options.choices_field);
  if (choices_it == item.value.end() || !choices_it->is_array() || choices_it->size() < 2)
    throw Error(fmt::format("{}: field '{}' must be an array of at least two choices", item.source,
                            options.choices_field));
  for (const auto& v : *choices_it) {
    if (!v.is_string() || trim(v.get<std::string>()).empty())
      throw Error(fmt::format("{}: every entry of '{}' must be a non-empty string", item.source,
                              options.choices_field));
    c.choices.push_back(trim(v.get<std::string>()));
  }
  const auto answer_it = item.value.find(options.answer_field);
  if (answer_it != item.value.end() && answer_it->is_number_integer()) {
    c.gold = answer_it->get<int64_t>();
  } else if (answer_it != item.value.end() && answer_it->is_string()) {
    const auto at = std::find(c.choices.begin(), c.choices.end(), trim(answer_it->get<std::string>()));
    c.gold = at == c.choices.end() ? -1 : at - c.choices.begin();
  }
  if (c.gold < 0 || c.gold >= static_cast<int64_t>(c.choices.size()))
    throw Error(fmt::format("{}: field '{}' must be a choice's index (0-based) or its text", item.source,
                            options.answer_field));
  c.prompt = prompt_ids(tok, prefix + fill(options.template_text, item.value, item.source), options.add_bos);
  // Each choice is encoded on its own: SentencePiece starts it as a new word, as after "Answer:" in text.
  for (const auto& choice : c.choices) {
    c.continuations.push_back(tok.encode(choice));
    const auto positions = c.prompt.size() + c.continuations.back().size() - 1;
    if (positions > static_cast<size_t>(max_positions))
      throw Error(fmt::format("{}: prompt and choice take {} positions, more than max_position_embeddings={}",
                              item.source, positions, max_positions));
  }
  return c;
}

// The item's prediction from its choices' log-probabilities: the highest total, and the highest per UTF-8 byte.
ChoicePrediction predict_choice(const ChoiceItem& item, const std::vector<std::vector<double>>& logprobs) {
  ChoicePrediction p;
  p.line = item.line;
  p.gold = item.gold;
  double best = -INFINITY, best_norm = -INFINITY;
  for (size_t c = 0; c < item.choices.size(); ++c) {
    double total = 0;
    for (double v : logprobs[c]) total += v;
    p.logprob.push_back(total);
    p.tokens.push_back(static_cast<int64_t>(item.continuations[c].size()));
    p.bytes.push_back(static_cast<int64_t>(item.choices[c].size()));
    if (total > best) best = total, p.predicted = static_cast<int64_t>(c);
    const double norm = total / static_cast<double>(item.choices[c].size());
    if (norm > best_norm) best_norm = norm, p.predicted_norm = static_cast<int64_t>(c);
  }
  return p;
}
}  // namespace

ChoiceResult run_choice(LlamaImpl& model, const TextTokenizer& tok, const ChoiceOptions& options) {
  check_vocab(model, tok);
  const auto t0 = std::chrono::steady_clock::now();
  const auto lines = read_json_lines(options.items, options.limit);
  const auto prefix = prompt_prefix(options.prompt_file, options.separator);
  std::vector<ChoiceItem> items;
  for (const auto& line : lines)
    items.push_back(read_choice_item(line, tok, prefix, options, model.config.max_position_embeddings));
  // The tokens every prompt starts with (the few-shot examples) run once; each item runs only its own after them.
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& item : items) prompts.push_back(item.prompt);
  const int64_t shared = shared_prefix_length(prompts);
  const KVCache shared_cache =
      shared > 0 ? prefill_cache(model, {prompts[0].begin(), prompts[0].begin() + shared}) : KVCache();
  ChoiceResult r;
  r.options = options;
  Progress progress("multiple choice " + stem(options.items), static_cast<int64_t>(items.size()), "item");
  for (const auto& item : items) {
    auto p = predict_choice(item, continuation_logprobs(model, item.prompt, item.continuations,
                                                        shared > 0 ? &shared_cache : nullptr));
    r.correct += p.predicted == p.gold;
    r.correct_norm += p.predicted_norm == p.gold;
    r.predictions.push_back(std::move(p));
    if (options.progress)
      progress.update(static_cast<int64_t>(r.predictions.size()), fmt::format("accuracy {:.3f}", r.accuracy()));
  }
  if (options.progress) progress.finish(fmt::format("accuracy {:.3f}", r.accuracy()));
  r.seconds = seconds_since(t0);
  return r;
}

std::string EvalReport::table() const {
  std::string s;
  if (!model_dir.empty()) s += fmt::format("model     {} (weights sha256 {})\n", model_dir, model_sha256.substr(0, 16));
  if (!tokenizer.empty()) s += fmt::format("tokenizer {}\n", tokenizer);
  if (!device.empty()) s += fmt::format("device    {}\n", device);
  if (!losses.empty()) {
    s += fmt::format("\n{:<24} {:>12} {:>8} {:>10} {:>10}\n", "held-out data", "tokens", "seq_len", "loss", "ppl");
    for (const auto& l : losses)
      s += fmt::format("{:<24} {:>12} {:>8} {:>10.4f} {:>10.3f}\n", l.name, l.loss.tokens, l.seq_len, l.loss.loss(),
                       l.loss.perplexity());
  }
  if (!fewshot.empty()) {
    s += fmt::format("\n{:<24} {:>8} {:>8} {:>10} {:>10} {:>9}\n", "few-shot", "items", "correct", "accuracy",
                     "truncated", "seconds");
    for (const auto& f : fewshot)
      s += fmt::format("{:<24} {:>8} {:>8} {:>10.4f} {:>10} {:>9.1f}\n", stem(f.options.items), f.predictions.size(),
                       f.correct, f.accuracy(), f.truncated_prompts, f.seconds);
  }
  if (!choice.empty()) {
    s += fmt::format("\n{:<24} {:>8} {:>10} {:>10} {:>9}\n", "multiple choice", "items", "accuracy", "acc_norm",
                     "seconds");
    for (const auto& c : choice)
      s += fmt::format("{:<24} {:>8} {:>10.4f} {:>10.4f} {:>9.1f}\n", stem(c.options.items), c.predictions.size(),
                       c.accuracy(), c.accuracy_norm(), c.seconds);
  }
  if (!suite.empty()) {
    s += fmt::format("\n{:<24} {:<16} {:>8} {:>8} {:>10} {:>10} {:>9}\n", "benchmark", "style", "items", "correct",
                     "accuracy", "truncated", "seconds");
    double sum = 0;
    for (const auto& r : suite) {
      s += fmt::format("{:<24} {:<16} {:>8} {:>8} {:>10.4f} {:>10} {:>9.1f}\n", enum_name(kBenchmarkNames, r.which),
                       enum_name(kPromptStyleNames, r.style), r.records.size(), r.correct, r.accuracy(),
                       r.truncated_prompts, r.seconds);
      sum += r.accuracy();
    }
    if (suite.size() > 1) s += fmt::format("{:<24} {:<16} {:>8} {:>8} {:>10.4f}\n", "average", "", "", "", sum / suite.size());
    for (const auto& r : suite)
      if (r.missing_module)
        s += fmt::format("{}: {} items had a program fail for a Python module the interpreter lacks (sympy? numpy?)\n",
                         enum_name(kBenchmarkNames, r.which), r.missing_module);
  }
  return s;
}

std::string EvalReport::to_json() const {
  json j = {{"model", model_dir}, {"model_sha256", model_sha256}, {"tokenizer", tokenizer}, {"device", device}};
  j["heldout"] = json::array();
  for (const auto& l : losses)
    j["heldout"].push_back({{"name", l.name},
                            {"dir", l.dir},
                            {"seq_len", l.seq_len},
                            {"tokens", l.loss.tokens},
                            {"document_starts_excluded", l.loss.document_starts},
                            {"loss", l.loss.loss()},
                            {"perplexity", l.loss.perplexity()}});
  j["fewshot"] = json::array();
  for (const auto& f : fewshot) {
    const auto& o = f.options;
    json preds = json::array();
    for (const auto& p : f.predictions)
      preds.push_back({{"line", p.line},
                       {"question", p.question},
                       {"generation", p.generation},
                       {"predicted", p.predicted},
                       {"gold", p.gold},
                       {"correct", p.correct},
                       {"stop_reason", p.stop_reason},
                       {"prompt_tokens", p.prompt_tokens},
                       {"new_tokens", p.new_tokens}});
    j["fewshot"].push_back({{"name", stem(o.items)},
                            {"items_file", o.items},
                            {"prompt_file", o.prompt_file},
                            {"template", o.template_text},
                            {"separator", o.separator},
                            {"stop", o.stop},
                            {"max_new_tokens", o.max_new_tokens},
                            {"items", f.predictions.size()},
                            {"correct", f.correct},
                            {"accuracy", f.accuracy()},
                            {"truncated_prompts", f.truncated_prompts},
                            {"seconds", f.seconds},
                            {"predictions", preds}});
  }
  j["multiple_choice"] = json::array();
  for (const auto& c : choice) {
    const auto& o = c.options;
    json preds = json::array();
    for (const auto& p : c.predictions)
      preds.push_back({{"line", p.line},
                       {"logprob", p.logprob},
                       {"tokens", p.tokens},
                       {"bytes", p.bytes},
                       {"gold", p.gold},
                       {"predicted", p.predicted},
                       {"predicted_norm", p.predicted_norm}});
    j["multiple_choice"].push_back({{"name", stem(o.items)},
                                    {"items_file", o.items},
                                    {"prompt_file", o.prompt_file},
                                    {"template", o.template_text},
                                    {"separator", o.separator},
                                    {"items", c.predictions.size()},
                                    {"correct", c.correct},
                                    {"accuracy", c.accuracy()},
                                    {"correct_norm", c.correct_norm},
                                    {"accuracy_norm", c.accuracy_norm()},
                                    {"seconds", c.seconds},
                                    {"predictions", preds}});
  }
  j["benchmarks"] = json::array();
  double sum = 0;
  for (const auto& r : suite) {
    j["benchmarks"].push_back({{"name", enum_name(kBenchmarkNames, r.which)},
                               {"style", enum_name(kPromptStyleNames, r.style)},
                               {"data_file", r.data_file},
                               {"prompt_file", r.prompt_file},
                               {"items", r.records.size()},
                               {"correct", r.correct},
                               {"accuracy", r.accuracy()},
                               {"truncated_prompts", r.truncated_prompts},
                               {"missing_module", r.missing_module},
                               {"seconds", r.seconds}});
    sum += r.accuracy();
  }
  if (!suite.empty()) j["benchmark_average"] = sum / static_cast<double>(suite.size());
  // Generations may end inside a multi-byte character: write U+FFFD rather than fail.
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace rho
