// rho_eval: held-out loss / perplexity, few-shot math accuracy and multiple-choice accuracy of a model.
//   rho_eval --model MODEL [--data NAME=DIR]... [--fewshot ITEMS --fewshot-prompt FILE] [--choice ITEMS]
// MODEL: a Hugging Face directory, a librho checkpoint directory, or a rho_pretrain run directory.
//            [--tokenizer MODEL_OR_DATASET] [--json OUT]
// docs/eval.md describes the formats, the prompt and stop rules and answer extraction.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <filesystem>
#include <iostream>


#include "librho/data/token_dataset.h"
#include "librho/eval/tasks.h"
#include "librho/io/hf_checkpoint.h"
#include "librho/train/checkpoint.h"
#include "librho/train/config.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/device.h"

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
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"librho evaluation: held-out loss, few-shot generation, multiple choice"};
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
  app.add_option("--model", model_dir, "Hugging Face, checkpoint or rho_pretrain run directory")->required();
  app.add_option("--data", data, "NAME=DIR: token dataset for held-out loss (repeatable)");
  app.add_option("--seq-len", heldout.seq_len,
                 "held-out loss window (default: the training seq_len of the run the model comes from, else "
                 "min(2048, max_position_embeddings))")
      ->default_str("");
  app.add_option("--batch-size", heldout.batch_size, "held-out loss windows per forward pass");
  app.add_option("--tokenizer", tokenizer_path,
                 "SentencePiece .model, Hugging Face tokenizer.json, or a token dataset folder (default: the first --data folder)");
  app.add_option("--fewshot", fs.items, "JSON Lines of generation items (question, answer)");
  app.add_option("--fewshot-prompt", fs.prompt_file, "few-shot examples put before every item");
  app.add_option("--template", fs.template_text, "item prompt; {field} is the item's field (\\n = newline)")
      ->default_str("Question: {question}\\nAnswer:");
  app.add_option("--separator", fs.separator, "between the few-shot text and the item prompt")->default_str("\\n\\n\\n");
  app.add_option("--stop", stop, "stop string (repeatable; default \"\\n\\nQuestion:\")");
  app.add_option("--max-new-tokens", fs.max_new_tokens, "generation length limit");
  app.add_option("--answer-field", fs.answer_field, "item field holding the reference answer");
  app.add_option("--choice", mc.items, "JSON Lines of multiple-choice items (question, choices, answer)");
  app.add_option("--choice-prompt", mc.prompt_file, "few-shot text put before every multiple-choice item");
  app.add_option("--choice-template", mc.template_text, "multiple-choice prompt template")
      ->default_str("Question: {question}\\nAnswer:");
  app.add_option("--limit", limit, "evaluate only the first N items of each task (0: all)");
  app.add_flag("--no-bos", no_bos, "do not start prompts with BOS");
  app.add_option("--json", json_out, "write every figure and per-item predictions here");
  app.add_option("--device", device, "auto, cpu or cuda");
  app.add_option("--dtype", dtype, "auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16");
  app.add_flag("--quiet", quiet, "no progress lines");
  CLI11_PARSE(app, argc, argv);
  try {
    if (data.empty() && fs.items.empty() && mc.items.empty())
      throw rho::Error("nothing to evaluate: give --data, --fewshot or --choice");
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
    if (!fs.items.empty() || !mc.items.empty()) {
      if (tokenizer_path.empty()) throw rho::Error("--fewshot and --choice need --tokenizer (or a --data folder)");
      const auto tok = rho::TextTokenizer::load(tokenizer_path);
      report.tokenizer = tok.path();
      if (!fs.items.empty()) report.fewshot.push_back(rho::run_fewshot(*model, tok, fs));
      if (!mc.items.empty()) report.choice.push_back(rho::run_choice(*model, tok, mc));
    }
    std::cout << report.table();
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
