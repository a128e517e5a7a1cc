// rho_eval: held-out loss / perplexity, few-shot math accuracy, multiple-choice accuracy, and the Rho-1 math
// benchmark suite of a model; or, with --grade, the suite's grading of given completions without a model.
//   rho_eval --model MODEL [--data NAME=DIR]... [--fewshot ITEMS --fewshot-prompt FILE] [--choice ITEMS]
//            [--bench NAME... --eval-dir DIR [--style cot|tool-integrated]] [--tokenizer PATH] [--json OUT]
//   rho_eval --grade COMPLETIONS --bench NAME... --eval-dir DIR
// MODEL: a Hugging Face directory, a librho checkpoint directory, or a rho_pretrain run directory.
// docs/eval.md describes the formats, the prompt and stop rules and answer extraction.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <filesystem>
#include <iostream>


#include "librho/data/token_dataset.h"
#include "librho/eval/benchmarks.h"
#include "librho/eval/tasks.h"
#include "librho/io/hf_checkpoint.h"
#include "librho/train/checkpoint.h"
#include "librho/train/config.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/device.h"
#include "librho/util/enum_names.h"
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

namespace {
// The training window of the rho_pretrain run a model comes from (the run folder, its hf/ export or one of its
// checkpoints), from the run's config.yaml; 0 when there is none.
int64_t run_seq_len(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path m = fs::absolute(model_dir).lexically_normal();
  for (const auto& dir : {m, m.parent_path(), m.parent_path().parent_path()}) {
    const auto config = dir / "config.yaml";
    if (!fs::exists(config)) continue;
    try {
      return rho::TrainConfig::from_yaml_file(config.string()).seq_len;
    } catch (const std::exception&) {
      return 0;  // a config.yaml of something else
    }
  }
  return 0;
}

// --bench values: names, comma lists, or "all" (every benchmark whose test set is there and that has a prompt
// for the style).
std::vector<rho::Benchmark> chosen_benchmarks(const std::vector<std::string>& values, const rho::SuiteOptions& o) {
  namespace fs = std::filesystem;
  std::vector<rho::Benchmark> out;
  for (const auto& value : values) {
    size_t from = 0;
    while (from <= value.size()) {
      const size_t comma = std::min(value.find(',', from), value.size());
      const std::string name = value.substr(from, comma - from);
      from = comma + 1;
      if (name.empty()) continue;
      if (name == "all") {
        for (const auto& [b, n] : rho::kBenchmarkNames) {
          const auto& spec = rho::benchmark_spec(b);
          const bool has_prompt = o.style == rho::PromptStyle::Cot || *spec.tool_prompt != '\0';
          const bool has_data = o.data_files.count(n) || fs::exists(fs::path(o.eval_dir) / spec.data);
          if (has_prompt && has_data && std::find(out.begin(), out.end(), b) == out.end()) out.push_back(b);
        }
        continue;
      }
      const auto b = rho::enum_from_name(rho::kBenchmarkNames, name);
      if (!b) throw rho::Error(fmt::format("--bench {}: not a benchmark (one of: {}, all)", name, rho::enum_names(rho::kBenchmarkNames)));
      if (std::find(out.begin(), out.end(), *b) == out.end()) out.push_back(*b);
    }
  }
  if (out.empty()) throw rho::Error("--bench: no benchmark chosen (with \"all\": no test set found under --eval-dir)");
  return out;
}

// --grade FILE: JSON Lines of {"benchmark", "idx", "completion"}; "benchmark" may be left out when one
// benchmark is chosen. Returns benchmark -> idx -> completion.
std::map<rho::Benchmark, std::map<std::string, std::string>> read_completions(const std::string& path,
                                                                           const std::vector<rho::Benchmark>& chosen) {
  using json = nlohmann::json;
  std::ifstream in(path);
  if (!in) throw rho::Error(fmt::format("{}: cannot open", path));
  std::map<rho::Benchmark, std::map<std::string, std::string>> out;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, line);
    json v;
    try {
      v = json::parse(text);
    } catch (const json::exception& e) {
      throw rho::Error(fmt::format("{}: not valid JSON ({})", where, e.what()));
    }
    if (!v.is_object()) throw rho::Error(fmt::format("{}: not a JSON object", where));
    rho::Benchmark b;
    if (v.contains("benchmark")) {
      const auto named = v["benchmark"].is_string() ? rho::enum_from_name(rho::kBenchmarkNames, v["benchmark"].get<std::string>())
                                                    : std::nullopt;
      if (!named) throw rho::Error(fmt::format("{}: field 'benchmark' must be one of: {}", where, rho::enum_names(rho::kBenchmarkNames)));
      b = *named;
      if (std::find(chosen.begin(), chosen.end(), b) == chosen.end())
        throw rho::Error(fmt::format("{}: benchmark {} is not among --bench", where, v["benchmark"].get<std::string>()));
    } else if (chosen.size() == 1) {
      b = chosen[0];
    } else {
      throw rho::Error(fmt::format("{}: field 'benchmark' is missing (needed when --bench names several)", where));
    }
    if (!v.contains("idx") || !(v["idx"].is_string() || v["idx"].is_number_integer()))
      throw rho::Error(fmt::format("{}: field 'idx' must be the item's idx (a string or an integer)", where));
    if (!v.contains("completion") || !v["completion"].is_string())
      throw rho::Error(fmt::format("{}: field 'completion' must be a string", where));
    const std::string idx = v["idx"].is_string() ? v["idx"].get<std::string>() : v["idx"].dump();
    if (!out[b].emplace(idx, v["completion"].get<std::string>()).second)
      throw rho::Error(fmt::format("{}: idx {} of {} given twice", where, idx, rho::enum_name(rho::kBenchmarkNames, b)));
  }
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"librho evaluation: held-out loss, few-shot generation, multiple choice, the math benchmark suite"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::string model_dir, tokenizer_path, json_out, device = "auto", dtype = "auto";
  std::vector<std::string> data;
  rho::HeldoutOptions heldout;
  heldout.seq_len = 0;
  rho::FewShotOptions fs;
  rho::ChoiceOptions mc;
  std::vector<std::string> stop;
  int64_t limit = 0;
  bool no_bos = false, quiet = false;
  std::vector<std::string> bench, bench_files;
  std::string grade_file, records_out, markdown_out, style = "cot";
  rho::SuiteOptions suite;
  app.add_option("--model", model_dir, "Hugging Face, checkpoint or rho_pretrain run directory (not with --grade)");
  app.add_option("--data", data, "NAME=DIR: token dataset for held-out loss (repeatable)");
  app.add_option("--seq-len", heldout.seq_len,
                 "held-out loss window (default: the training seq_len of the run the model comes from, else "
                 "min(2048, max_position_embeddings))")
      ->default_str("");
  app.add_option("--batch-size", heldout.batch_size, "held-out loss windows per forward pass");
  app.add_option("--tokenizer", tokenizer_path,
                 "SentencePiece .model, Hugging Face tokenizer.json, or a token dataset folder (default: the first --data folder, else the model folder's tokenizer.json or tokenizer.model)");
  app.add_option("--fewshot", fs.items, "JSON Lines of generation items (question, answer)");
  app.add_option("--fewshot-prompt", fs.prompt_file, "few-shot examples put before every item");
  app.add_option("--template", fs.template_text, "item prompt; {field} is the item's field (\\n = newline)")
      ->default_str("Question: {question}\\nAnswer:");
  app.add_option("--separator", fs.separator, "between the few-shot text and the item prompt")->default_str("\\n\\n\\n");
  app.add_option("--stop", stop, "stop string (repeatable; default \"\\n\\nQuestion:\")");
  app.add_option("--max-new-tokens", fs.max_new_tokens,
                 "generation length limit (default 256 for --fewshot, 1024 per call for --bench)")
      ->default_str("");
  app.add_option("--answer-field", fs.answer_field, "item field holding the reference answer");
  app.add_option("--choice", mc.items, "JSON Lines of multiple-choice items (question, choices, answer)");
  app.add_option("--choice-prompt", mc.prompt_file, "few-shot text put before every multiple-choice item");
  app.add_option("--choice-template", mc.template_text, "multiple-choice prompt template")
      ->default_str("Question: {question}\\nAnswer:");
  app.add_option("--bench", bench, "math benchmarks of the Rho-1 suite (names, comma lists, or all)");
  app.add_option("--eval-dir", suite.eval_dir, "the suite's folder: NAME/test.jsonl and prompts/STYLE/NAME.md");
  app.add_option("--bench-file", bench_files, "NAME=FILE: a benchmark's test set from FILE (repeatable)");
  app.add_option("--style", style, "cot or tool-integrated");
  app.add_option("--bench-batch", suite.batch_size, "chain of thought: prompts generated together (left-padded batch)");
  app.add_option("--max-tool-calls", suite.max_tool_calls, "tool-integrated: program runs per item");
  app.add_option("--python", suite.sandbox.python, "tool-integrated: the interpreter that runs model-written code");
  app.add_option("--grade", grade_file, "JSON Lines of {benchmark, idx, completion}: grade them, no model");
  app.add_option("--records", records_out, "per-item JSON Lines of the benchmarks (question, completion, answer, verdict)");
  app.add_option("--markdown", markdown_out, "the benchmarks' table as Markdown");
  app.add_option("--limit", limit, "evaluate only the first N items of each task (0: all)");
  app.add_flag("--no-bos", no_bos, "do not start prompts with BOS");
  app.add_option("--json", json_out, "write every figure and per-item predictions here");
  app.add_option("--device", device, "auto, cpu or cuda");
  app.add_option("--dtype", dtype, "auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16");
  app.add_flag("--quiet", quiet, "no progress lines");
  CLI11_PARSE(app, argc, argv);
  try {
    const bool explicit_max_new = app.count("--max-new-tokens") > 0;
    if (!explicit_max_new) fs.max_new_tokens = 256;
    const auto style_value = rho::enum_from_name(rho::kPromptStyleNames, style);
    if (!style_value) throw rho::Error(fmt::format("--style {}: one of {}", style, rho::enum_names(rho::kPromptStyleNames)));
    suite.style = *style_value;
    suite.limit = limit;
    suite.add_bos = !no_bos;
    suite.progress = !quiet;
    if (explicit_max_new) suite.max_new_tokens = fs.max_new_tokens;
    for (const auto& spec : bench_files) {
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
        throw rho::Error(fmt::format("--bench-file {}: expected NAME=FILE", spec));
      if (!rho::enum_from_name(rho::kBenchmarkNames, spec.substr(0, eq)))
        throw rho::Error(fmt::format("--bench-file {}: not a benchmark (one of: {})", spec, rho::enum_names(rho::kBenchmarkNames)));
      suite.data_files[spec.substr(0, eq)] = spec.substr(eq + 1);
    }
    const auto benchmarks = bench.empty() ? std::vector<rho::Benchmark>{} : chosen_benchmarks(bench, suite);
    auto write_suite_files = [&](const std::vector<rho::BenchmarkResult>& results) {
      if (!records_out.empty()) {
        rho::write_file_atomic(records_out, rho::suite_records_jsonl(results));
        std::cout << "written: " << records_out << "\n";
      }
      if (!markdown_out.empty()) {
        rho::write_file_atomic(markdown_out, rho::suite_markdown(results));
        std::cout << "written: " << markdown_out << "\n";
      }
    };
    if (!grade_file.empty()) {
      if (!model_dir.empty() || !data.empty() || !fs.items.empty() || !mc.items.empty())
        throw rho::Error("--grade grades given completions: it takes --bench and --eval-dir, not a model or other tasks");
      if (benchmarks.empty()) throw rho::Error("--grade needs --bench (the benchmarks the completions answer)");
      rho::EvalReport report;
      for (const auto& [b, completions] : read_completions(grade_file, benchmarks))
        report.suite.push_back(rho::grade_benchmark(b, suite, completions, grade_file));
      std::cout << report.table();
      write_suite_files(report.suite);
      if (!json_out.empty()) {
        rho::write_file_atomic(json_out, report.to_json());
        std::cout << "written: " << json_out << "\n";
      }
      return 0;
    }
    if (model_dir.empty()) throw rho::Error("--model is required (except with --grade)");
    if (data.empty() && fs.items.empty() && mc.items.empty() && benchmarks.empty())
      throw rho::Error("nothing to evaluate: give --data, --fewshot, --choice or --bench");
    auto model = rho::load_model(model_dir);
    rho::EvalReport report;
    report.model_dir = model_dir;
    report.model_sha256 = model->weights_sha256();
    const bool cuda = rho::resolve_device(device).is_cuda();
    if (dtype == "auto") dtype = cuda ? "bfloat16" : "float32";
    if (dtype != "float32" && dtype != "bfloat16") throw rho::Error("--dtype must be auto, float32 or bfloat16");
    model->to(cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU), dtype == "float32" ? at::kFloat : at::kBFloat16);
    model->eval();
    report.device = fmt::format("{} {}", cuda ? "cuda" : "cpu", dtype);
    const int64_t max_pos = model->config.max_position_embeddings;
    if (heldout.seq_len <= 0) heldout.seq_len = run_seq_len(model_dir);
    if (heldout.seq_len <= 0) heldout.seq_len = std::min<int64_t>(2048, max_pos);
    heldout.progress = fs.progress = mc.progress = !quiet;
    fs.limit = mc.limit = limit;
    fs.add_bos = mc.add_bos = !no_bos;
    fs.template_text = rho::unescape(fs.template_text);
    fs.separator = mc.separator = rho::unescape(fs.separator);
    mc.template_text = rho::unescape(mc.template_text);
    if (!stop.empty()) {
      fs.stop.clear();
      for (const auto& s : stop) fs.stop.push_back(rho::unescape(s));
    }

    for (const auto& spec : data) {
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
        throw rho::Error(fmt::format("--data {}: expected NAME=DIR", spec));
      rho::LossResult l;
      l.name = spec.substr(0, eq);
      l.dir = spec.substr(eq + 1);
      l.seq_len = heldout.seq_len;
      const auto ds = rho::TokenDataset::open(l.dir);
      if (ds.manifest().vocab_size > model->config.vocab_size)
        throw rho::Error(fmt::format("{}: dataset vocab_size {} exceeds the model's {}", l.dir,
                                     ds.manifest().vocab_size, model->config.vocab_size));
      l.loss = rho::heldout_loss(model, ds, heldout);
      report.losses.push_back(l);
      if (tokenizer_path.empty()) tokenizer_path = l.dir;
    }
    if (!fs.items.empty() || !mc.items.empty() || !benchmarks.empty()) {
      for (const char* name : {"tokenizer.json", "tokenizer.model"})  // a Hugging Face folder's own tokenizer
        if (tokenizer_path.empty() && std::filesystem::exists(std::filesystem::path(model_dir) / name))
          tokenizer_path = (std::filesystem::path(model_dir) / name).string();
      if (tokenizer_path.empty())
        throw rho::Error("--fewshot, --choice and --bench need --tokenizer (or a --data folder, or a model folder "
                         "with tokenizer.json or tokenizer.model)");
      const auto tok = rho::TextTokenizer::load(tokenizer_path);
      report.tokenizer = tok.path();
      if (!fs.items.empty()) report.fewshot.push_back(rho::run_fewshot(*model, tok, fs));
      if (!mc.items.empty()) report.choice.push_back(rho::run_choice(*model, tok, mc));
      for (const auto b : benchmarks) report.suite.push_back(rho::run_benchmark(*model, tok, b, suite));
    }
    std::cout << report.table();
    write_suite_files(report.suite);
    if (!json_out.empty()) {
      rho::write_file_atomic(json_out, report.to_json());
      std::cout << "written: " << json_out << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "\nrho_eval: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
