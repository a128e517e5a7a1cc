// rho_eval: held-out loss / perplexity, few-shot math accuracy, multiple-choice accuracy, and the Rho-1 math
// benchmark suite of a model; or, with --grade, the suite's grading of given completions without a model.
//   rho_eval --model MODEL [--data NAME=DIR]... [--fewshot ITEMS --fewshot-prompt FILE] [--choice ITEMS]
//            [--bench NAME... --eval-dir DIR [--style cot|tool-integrated]] [--tokenizer PATH] [--json OUT]
//   rho_eval --grade COMPLETIONS --bench NAME... --eval-dir DIR
// MODEL: a Hugging Face directory, a librho checkpoint directory, or a rho_pretrain run directory.
// Under a launcher (torchrun, srun: WORLD_SIZE > 1) the --bench items are split between the ranks, one GPU each.
// docs/eval.md describes the formats, the prompt and stop rules and answer extraction.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <chrono>
#include <iostream>
#include <thread>
#include <tuple>

#include "librho/data/token_dataset.h"
#include "librho/dist/context.h"
#include "librho/eval/benchmarks.h"
#include "librho/eval/tasks.h"
#include "librho/io/hf_checkpoint.h"
#include "librho/train/checkpoint.h"
#include "librho/train/config.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/sha256.h"
#include "librho/util/device.h"
#include "librho/util/enum_names.h"
#include "librho/util/host_memory.h"

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

// Every option of the command line.
struct Args {
  std::string model_dir, tokenizer_path, json_out, device = "auto", dtype = "auto";
  std::vector<std::string> data, stop, bench, bench_files;
  rho::HeldoutOptions heldout;
  rho::FewShotOptions fs;
  rho::ChoiceOptions mc;
  rho::SuiteOptions suite;
  int64_t limit = 0;
  double part_timeout = 3600;
  bool no_bos = false, quiet = false;
  std::string grade_file, records_out, markdown_out, style = "cot";
  Args() { heldout.seq_len = 0; }
};

void add_options(CLI::App& app, Args& a) {
  app.add_option("--model", a.model_dir, "Hugging Face, checkpoint or rho_pretrain run directory (not with --grade)");
  app.add_option("--data", a.data, "NAME=DIR: token dataset for held-out loss (repeatable)");
  app.add_option("--seq-len", a.heldout.seq_len,
                 "held-out loss window (default: the training seq_len of the run the model comes from, else "
                 "min(2048, max_position_embeddings))")
      ->default_str("");
  app.add_option("--batch-size", a.heldout.batch_size, "held-out loss windows per forward pass");
  app.add_option("--tokenizer", a.tokenizer_path,
                 "SentencePiece .model, Hugging Face tokenizer.json, or a token dataset folder (default: the first --data folder, else the model folder's tokenizer.json or tokenizer.model)");
  app.add_option("--fewshot", a.fs.items, "JSON Lines of generation items (question, answer)");
  app.add_option("--fewshot-prompt", a.fs.prompt_file, "few-shot examples put before every item");
  app.add_option("--template", a.fs.template_text, "item prompt; {field} is the item's field (\\n = newline)")
      ->default_str("Question: {question}\\nAnswer:");
  app.add_option("--separator", a.fs.separator, "between the few-shot text and the item prompt")->default_str("\\n\\n\\n");
  app.add_option("--stop", a.stop, "stop string (repeatable; default \"\\n\\nQuestion:\")");
  app.add_option("--max-new-tokens", a.fs.max_new_tokens,
                 "generation length limit (default 256 for --fewshot, 1024 per call for --bench)")
      ->default_str("");
  app.add_option("--answer-field", a.fs.answer_field, "item field holding the reference answer");
  app.add_option("--choice", a.mc.items, "JSON Lines of multiple-choice items (question, choices, answer)");
  app.add_option("--choice-prompt", a.mc.prompt_file, "few-shot text put before every multiple-choice item");
  app.add_option("--choice-template", a.mc.template_text, "multiple-choice prompt template")
      ->default_str("Question: {question}\\nAnswer:");
  app.add_option("--bench", a.bench, "math benchmarks of the Rho-1 suite (names, comma lists, or all)");
  app.add_option("--eval-dir", a.suite.eval_dir, "the suite's folder: NAME/test.jsonl and prompts/STYLE/NAME.md");
  app.add_option("--bench-file", a.bench_files, "NAME=FILE: a benchmark's test set from FILE (repeatable)");
  app.add_option("--style", a.style, "cot or tool-integrated");
  app.add_option("--generate-batch", a.suite.batching.batch_size,
                 "--fewshot and --bench: sequences decoded together (continuous batching: a finished one's row takes "
                 "the next prompt)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--cuda-graphs", a.suite.batching.cuda_graphs,
               "--fewshot and --bench on CUDA: decoding steps replayed from CUDA graphs (fixed-shape, masked steps: "
               "in bf16 near-tied logits may pick other tokens than eager steps)");
  app.add_option("--max-tool-calls", a.suite.max_tool_calls, "tool-integrated: program runs per item");
  app.add_option("--tool-jobs", a.suite.tool_jobs,
                 "tool-integrated: programs run at once within a round (0: one per CPU it may use)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--python", a.suite.sandbox.python, "tool-integrated: the interpreter that runs model-written code");
  app.add_option("--grade", a.grade_file, "JSON Lines of {benchmark, idx, completion}: grade them, no model");
  app.add_option("--records", a.records_out, "per-item JSON Lines of the benchmarks (question, completion, answer, verdict)");
  app.add_option("--markdown", a.markdown_out, "the benchmarks' table as Markdown");
  app.add_option("--limit", a.limit, "evaluate only the first N items of each task (0: all)");
  app.add_flag("--no-bos", a.no_bos, "do not start prompts with BOS");
  app.add_option("--json", a.json_out, "write every figure and per-item predictions here");
  app.add_option("--device", a.device, "auto, cpu or cuda");
  app.add_option("--dtype", a.dtype, "auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16");
  app.add_flag("--quiet", a.quiet, "no progress lines");
  app.add_option("--part-timeout", a.part_timeout,
                 "--bench under a launcher: seconds rank 0 waits, after its own share, for the other ranks' parts")
      ->check(CLI::NonNegativeNumber);
}

// NAME and VALUE of an option given as NAME=VALUE; `form` names the parts in the error ("NAME=DIR").
std::pair<std::string, std::string> name_value(const std::string& spec, const char* option, const char* form) {
  const auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    throw rho::Error(fmt::format("{} {}: expected {}", option, spec, form));
  return {spec.substr(0, eq), spec.substr(eq + 1)};
}

// The options every task shares, copied into each task's own (limits, BOS, progress, prompts' escapes).
void set_up_tasks(Args& a, bool explicit_max_new_tokens) {
  if (!explicit_max_new_tokens) a.fs.max_new_tokens = 256;
  const auto style = rho::enum_from_name(rho::kPromptStyleNames, a.style);
  if (!style) throw rho::Error(fmt::format("--style {}: one of {}", a.style, rho::enum_names(rho::kPromptStyleNames)));
  a.suite.style = *style;
  a.suite.limit = a.fs.limit = a.mc.limit = a.limit;
  a.fs.batching = a.suite.batching;
  a.suite.add_bos = a.fs.add_bos = a.mc.add_bos = !a.no_bos;
  a.suite.progress = a.heldout.progress = a.fs.progress = a.mc.progress = !a.quiet;
  if (explicit_max_new_tokens) a.suite.max_new_tokens = a.fs.max_new_tokens;
  for (const auto& spec : a.bench_files) {
    const auto [name, file] = name_value(spec, "--bench-file", "NAME=FILE");
    if (!rho::enum_from_name(rho::kBenchmarkNames, name))
      throw rho::Error(fmt::format("--bench-file {}: not a benchmark (one of: {})", spec, rho::enum_names(rho::kBenchmarkNames)));
    a.suite.data_files[name] = file;
  }
  a.fs.template_text = rho::unescape(a.fs.template_text);
  a.fs.separator = a.mc.separator = rho::unescape(a.fs.separator);
  a.mc.template_text = rho::unescape(a.mc.template_text);
  if (!a.stop.empty()) {
    a.fs.stop.clear();
    for (const auto& s : a.stop) a.fs.stop.push_back(rho::unescape(s));
  }
}

// --grade: the suite's grading of given completions, without a model.
rho::EvalReport grade(const Args& a, const std::vector<rho::Benchmark>& benchmarks) {
  if (!a.model_dir.empty() || !a.data.empty() || !a.fs.items.empty() || !a.mc.items.empty())
    throw rho::Error("--grade grades given completions: it takes --bench and --eval-dir, not a model or other tasks");
  if (benchmarks.empty()) throw rho::Error("--grade needs --bench (the benchmarks the completions answer)");
  rho::EvalReport report;
  for (const auto& [b, completions] : rho::read_completions(a.grade_file, benchmarks))
    report.suite.push_back(rho::grade_benchmark(b, a.suite, completions, a.grade_file));
  return report;
}

// The model on the device and in the dtype asked for (on CUDA, this process's GPU: cuda:LOCAL_RANK under a
// launcher), in eval mode; the report names them.
rho::Llama load_for_eval(const Args& a, const rho::DistEnv& env, rho::EvalReport& report) {
  auto model = rho::load_model(a.model_dir);
  report.model_dir = a.model_dir;
  report.model_sha256 = model->weights_sha256();
  const bool cuda = rho::resolve_device(a.device).is_cuda();
  if (!cuda) rho::keep_host_heap();  // CPU runs reuse their tensors' memory (librho/util/host_memory.h)
  const std::string dtype = a.dtype == "auto" ? (cuda ? "bfloat16" : "float32") : a.dtype;
  if (dtype != "float32" && dtype != "bfloat16") throw rho::Error("--dtype must be auto, float32 or bfloat16");
  model->to(cuda ? env.cuda_device() : at::Device(at::kCPU), dtype == "float32" ? at::kFloat : at::kBFloat16);
  model->eval();
  report.device = fmt::format("{} {}", cuda ? "cuda" : "cpu", dtype);
  return model;
}

// Held-out loss of each --data set, over windows of the run's training length unless --seq-len says.
void heldout_losses(rho::Llama& model, Args& a, rho::EvalReport& report) {
  if (a.heldout.seq_len <= 0) a.heldout.seq_len = run_seq_len(a.model_dir);
  if (a.heldout.seq_len <= 0) a.heldout.seq_len = std::min<int64_t>(2048, model->config.max_position_embeddings);
  for (const auto& spec : a.data) {
    rho::LossResult l;
    std::tie(l.name, l.dir) = name_value(spec, "--data", "NAME=DIR");
    l.seq_len = a.heldout.seq_len;
    const auto ds = rho::TokenDataset::open(l.dir);
    if (ds.manifest().vocab_size > model->config.vocab_size)
      throw rho::Error(fmt::format("{}: dataset vocab_size {} exceeds the model's {}", l.dir,
                                   ds.manifest().vocab_size, model->config.vocab_size));
    l.loss = rho::heldout_loss(model, ds, a.heldout);
    report.losses.push_back(l);
  }
}

// The tokenizer of the text tasks: --tokenizer, else the first --data folder's, else the model folder's own.
std::string tokenizer_of(const Args& a) {
  if (!a.tokenizer_path.empty()) return a.tokenizer_path;
  if (!a.data.empty()) return name_value(a.data.front(), "--data", "NAME=DIR").second;
  for (const char* name : {"tokenizer.json", "tokenizer.model"})
    if (std::filesystem::exists(std::filesystem::path(a.model_dir) / name))
      return (std::filesystem::path(a.model_dir) / name).string();
  throw rho::Error("--fewshot, --choice and --bench need --tokenizer (or a --data folder, or a model folder "
                   "with tokenizer.json or tokenizer.model)");
}

// The tasks asked for; `config` (when given) receives the model's.
rho::EvalReport evaluate(Args& a, const std::vector<rho::Benchmark>& benchmarks, const rho::DistEnv& env,
                         rho::LlamaConfig* config = nullptr) {
  if (a.model_dir.empty()) throw rho::Error("--model is required (except with --grade)");
  if (a.data.empty() && a.fs.items.empty() && a.mc.items.empty() && benchmarks.empty())
    throw rho::Error("nothing to evaluate: give --data, --fewshot, --choice or --bench");
  rho::EvalReport report;
  auto model = load_for_eval(a, env, report);
  if (config) *config = model->config;
  heldout_losses(model, a, report);
  if (a.fs.items.empty() && a.mc.items.empty() && benchmarks.empty()) return report;
  const auto tok = rho::TextTokenizer::load(tokenizer_of(a));
  report.tokenizer = tok.path();
  if (!a.fs.items.empty()) report.fewshot.push_back(rho::run_fewshot(*model, tok, a.fs));
  if (!a.mc.items.empty()) report.choice.push_back(rho::run_choice(*model, tok, a.mc));
  for (const auto b : benchmarks) report.suite.push_back(rho::run_benchmark(*model, tok, b, a.suite));
  return report;
}

// The table on stdout, and each file asked for, written atomically.
void write_outputs(const rho::EvalReport& report, const Args& a) {
  std::cout << report.table();
  auto write = [](const std::string& path, const std::string& text) {
    if (path.empty()) return;
    rho::write_file_atomic(path, text);
    std::cout << "written: " << path << "\n";
  };
  write(a.records_out, rho::suite_records_jsonl(report.suite));
  write(a.markdown_out, rho::suite_markdown(report.suite));
  write(a.json_out, report.to_json());
}

// What makes the parts of a split run one run's: the launch (torchrun's run id and restart count, SLURM's job and
// step, the rendezvous address; whichever are set) and everything that decides the results: the model's
// weights and config, the tokenizer, device and dtype, the benchmarks with their test and prompt files' contents,
// and the generation settings.
std::string run_key(const Args& a, const rho::EvalReport& report, const rho::LlamaConfig& config,
                    const std::vector<rho::Benchmark>& benchmarks) {
  std::string what;
  for (const char* v : {"TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "SLURM_JOB_ID", "SLURM_STEP_ID",
                        "MASTER_ADDR", "MASTER_PORT"})
    if (const char* value = std::getenv(v)) what += fmt::format("{}={}\n", v, value);
  what += report.model_sha256 + "\n" + config.to_hf_json() + report.tokenizer + "\n" + report.device + "\n";
  what += fmt::format("{} {} {} {} {} {} {}\n", rho::enum_name(rho::kPromptStyleNames, a.suite.style), a.suite.limit,
                      a.suite.max_new_tokens, a.suite.max_tool_calls, a.suite.add_bos, a.suite.batching.cuda_graphs,
                      a.suite.sandbox.python);
  for (const auto b : benchmarks) what += std::string(rho::enum_name(rho::kBenchmarkNames, b)) + "\n";
  for (const auto& r : report.suite)
    for (const auto& file : {r.data_file, r.prompt_file}) what += file + "\n" + rho::read_text_file(file);
  rho::Sha256 h;
  h.update(what.data(), what.size());
  return h.hex_digest();
}

// Under a launcher (WORLD_SIZE above 1: torchrun, or srun): each rank evaluates its share of every benchmark's
// items (SuiteOptions::shard) on its own GPU and writes it beside the first output asked for
// (OUTPUT.part-RANK-of-WORLD_SIZE); rank 0 then waits for every other rank's part of the same launch and settings
// (up to --part-timeout seconds) and writes the outputs of the whole run. The ranks share nothing but that folder.
void evaluate_share(Args& a, const std::vector<rho::Benchmark>& benchmarks, const rho::DistEnv& env) {
  const std::string ranks = fmt::format("{}={} ({} {})", env.world_size_from, env.world_size, env.rank_from, env.rank);
  if (!a.data.empty() || !a.fs.items.empty() || !a.mc.items.empty())
    throw rho::Error(
        fmt::format("{}: ranks split the items of --bench only (not --data, --fewshot or --choice)", ranks));
  if (benchmarks.empty()) throw rho::Error(fmt::format("{}: nothing to evaluate: give --bench", ranks));
  const std::string prefix = !a.json_out.empty() ? a.json_out : !a.records_out.empty() ? a.records_out : a.markdown_out;
  if (prefix.empty())
    throw rho::Error(fmt::format("{}: give --json, --records or --markdown, beside which the ranks write their "
                                 "parts and rank 0 the whole run's", ranks));
  const auto mine = rho::suite_part_path(prefix, env.rank, env.world_size);
  std::filesystem::remove(mine);  // an earlier run's
  std::cerr << fmt::format("rho_eval: {}: items {}, {}, ... of each benchmark, of {} ranks\n", ranks, env.rank,
                           env.rank + env.world_size, env.world_size);
  a.suite.shard = env.rank;
  a.suite.shards = env.world_size;
  rho::LlamaConfig config;
  auto report = evaluate(a, benchmarks, env, &config);
  const auto key = run_key(a, report, config, benchmarks);
  rho::write_suite_part(prefix, env.rank, env.world_size, key, report.suite);
  if (env.rank != 0) {
    std::cout << fmt::format("rank {} of {}: its share is in {}; rank 0 writes the outputs\n", env.rank,
                             env.world_size, mine);
    return;
  }
  std::vector<std::string> missing;
  const auto start = std::chrono::steady_clock::now();
  auto merged = rho::collect_suite_parts(prefix, env.world_size, key, &missing);
  for (bool told = false; !merged; merged = rho::collect_suite_parts(prefix, env.world_size, key, &missing)) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > a.part_timeout)
      throw rho::Error(fmt::format("{}: after {:.0f} s (--part-timeout) the parts of this run are still missing: {} "
                                   "(a rank failed, or was not started)", ranks, waited, fmt::join(missing, ", ")));
    if (!told) std::cerr << fmt::format("rho_eval: rank 0 waits for {}\n", fmt::join(missing, ", "));
    told = true;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  report.suite = std::move(*merged);
  write_outputs(report, a);
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"librho evaluation: held-out loss, few-shot generation, multiple choice, the math benchmark suite"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  Args a;
  add_options(app, a);
  CLI11_PARSE(app, argc, argv);
  try {
    set_up_tasks(a, app.count("--max-new-tokens") > 0);
    const auto benchmarks = a.bench.empty() ? std::vector<rho::Benchmark>{} : rho::choose_benchmarks(a.bench, a.suite);
    if (!a.grade_file.empty()) {
      write_outputs(grade(a, benchmarks), a);
    } else if (const auto env = rho::DistEnv::from_env(); env.world_size > 1) {
      evaluate_share(a, benchmarks, env);
    } else {
      write_outputs(evaluate(a, benchmarks, env), a);
    }
  } catch (const std::exception& e) {
    std::cerr << "\nrho_eval: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
