// rho_model: inspect, initialise and convert models; run one forward pass (used by the parity tests).
//   rho_model info CONFIG            parameter count of a YAML config, config.json or HF directory
//   rho_model init CONFIG --out DIR  a randomly initialised model saved in Hugging Face layout
//   rho_model convert IN --out DIR   load a Hugging Face checkpoint into librho and save it again
//   rho_model logits IN --tokens F --out F   logits and per-token losses for the "tokens" tensor of F
//   rho_model plan CONFIG --gpus N ...       memory per device of a training step (librho/model/memory_plan.h)
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "librho/librho.h"
#include "librho/util/enum_names.h"
#include "librho/util/files.h"

namespace fs = std::filesystem;

static rho::LlamaConfig read_config(const std::string& path) {
  if (fs::is_directory(path)) return rho::LlamaConfig::from_hf_json_file((fs::path(path) / "config.json").string());
  if (fs::path(path).extension() == ".json") return rho::LlamaConfig::from_hf_json_file(path);
  return rho::LlamaConfig::from_yaml_file(path);
}

namespace {
// The options of every subcommand (each reads the ones it declares).
struct Args {
  std::string in, out, tokens_path, json_out, dtype = "float32";
  uint64_t seed = 0;
  int64_t shard_bytes = 5'000'000'000;
  rho::MemoryPlanOptions plan;
  std::string sharding = "none", precision = "bf16", backend = "nccl", device = "cuda";
  bool plan_json = false, plan_largest = false;
};

void run_info(const Args& a) {
  const auto c = read_config(a.in);
  if (!a.json_out.empty()) rho::write_file_atomic(a.json_out, c.to_hf_json());
  std::cout << fmt::format("{{\"config\": \"{}\", \"parameters\": {}}}\n", a.in, c.num_parameters());
}

void run_init(const Args& a) {
  rho::Llama model(read_config(a.in));
  model->reset_parameters(a.seed);
  rho::save_hf_model(*model, a.out, {a.dtype, a.shard_bytes});
  std::cout << fmt::format("saved {} ({} parameters)\n", a.out, model->num_parameters());
}

void run_convert(const Args& a) {
  auto model = rho::load_hf_model(a.in);
  rho::save_hf_model(*model, a.out, {a.dtype, a.shard_bytes});
  std::cout << fmt::format("saved {} ({} parameters)\n", a.out, model->num_parameters());
}

void run_logits(const Args& a) {
  auto model = rho::load_hf_model(a.in);
  model->eval();
  at::NoGradGuard no_grad;
  auto all = rho::SafetensorsFile::open(a.tokens_path).tensor("tokens").to(at::kLong);
  auto x = all.narrow(1, 0, all.size(1) - 1), y = all.narrow(1, 1, all.size(1) - 1);
  auto h = model->hidden_states(x);
  rho::save_safetensors(a.out, {{"logits", model->logits(h)}, {"token_loss", model->token_loss_from_hidden(h, y)}});
}

void run_plan(Args a) {
  auto& po = a.plan;
  po.sharding = *rho::enum_from_name(rho::kShardingNames, a.sharding);  // CLI11 checked the name
  po.bf16 = a.precision == "bf16";
  po.gloo = a.backend == "gloo";
  po.cuda = a.device == "cuda";
  const auto config = read_config(a.in);
  if (a.plan_largest) {
    po.micro_batch = rho::largest_micro_batch(config, po);
    if (po.micro_batch == 0) {
      po.micro_batch = 1;
      throw rho::Error(fmt::format("not even a micro-batch of one sequence fits --gpu-memory {:g} GiB: it needs {:.2f} GiB",
                                   po.device_gib, rho::plan_memory(config, po).total() / double(1 << 30)));
    }
    if (!a.plan_json) std::cout << fmt::format("largest micro-batch that fits: {}\n\n", po.micro_batch);
  }
  const auto result = rho::plan_memory(config, po);
  std::cout << (a.plan_json ? result.json() + "\n" : result.table(po));
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"librho model tool"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.require_subcommand(1);
  Args a;

  auto* info = app.add_subcommand("info", "print the parameter count of a model config");
  info->add_option("config", a.in, "YAML config, config.json or HF directory")->required();
  info->add_option("--config-json", a.json_out, "also write the config as a Hugging Face config.json here");
  auto* init = app.add_subcommand("init", "save a randomly initialised model in Hugging Face layout");
  init->add_option("config", a.in, "YAML config, config.json or HF directory")->required();
  init->add_option("--out", a.out, "Hugging Face directory to write")->required();
  init->add_option("--seed", a.seed, "initialisation seed (the trainer's run.seed gives the same weights)");
  auto* convert = app.add_subcommand("convert", "load a Hugging Face checkpoint and save it again");
  convert->add_option("input", a.in, "Hugging Face directory to read")->required();
  convert->add_option("--out", a.out, "Hugging Face directory to write")->required();
  for (auto* sub : {init, convert}) {
    sub->add_option("--dtype", a.dtype, "float32, bfloat16 or float16");
    sub->add_option("--max-shard-bytes", a.shard_bytes, "largest safetensors file; bigger models are split into an index and shards");
  }
  auto* logits = app.add_subcommand("logits", "write logits and per-token losses for given tokens");
  logits->add_option("input", a.in, "HF directory")->required();
  logits->add_option("--tokens", a.tokens_path, "safetensors file with an int64 'tokens' [batch, seq+1]")->required();
  logits->add_option("--out", a.out, "safetensors file to write: 'logits' [batch, seq, vocab] and 'token_loss' [batch, seq]")->required();
  auto* plan = app.add_subcommand("plan", "print the memory per device of a training step, by category, and whether it fits");
  plan->add_option("config", a.in, "YAML config, config.json or HF directory")->required();
  auto& po = a.plan;
  plan->add_option("--gpus", po.world_size, "data-parallel devices (ranks)")->check(CLI::PositiveNumber);
  plan->add_option("--gpu-memory", po.device_gib, "memory of one device, GiB")->check(CLI::PositiveNumber);
  plan->add_option("--seq-len", po.seq_len, "tokens per sequence (data.seq_len)");
  plan->add_option("--micro-batch", po.micro_batch, "sequences per device per micro-batch (data.batch_size)")
      ->check(CLI::PositiveNumber);
  plan->add_option("--grad-accum", po.grad_accum, "micro-batches per step (data.grad_accum)");
  plan->add_option("--sharding", a.sharding, "train.sharding: none, optimizer, gradients or parameters")
      ->check(CLI::IsMember({"none", "optimizer", "gradients", "parameters"}));
  plan->add_option("--precision", a.precision, "bf16 (autocast, as on CUDA) or fp32")->check(CLI::IsMember({"bf16", "fp32"}));
  plan->add_flag("--activation-checkpointing", po.activation_checkpointing, "train.activation_checkpointing");
  plan->add_option("--device", a.device, "cuda or cpu: which attention kernel runs (fp32 on CUDA keeps keys and values "
                                         "copied to every head)")
      ->check(CLI::IsMember({"cuda", "cpu"}));
  plan->add_option("--backend", a.backend, "collectives: nccl (GPUs) or gloo (CPUs: one more buffer per reduce-scatter)")
      ->check(CLI::IsMember({"nccl", "gloo"}));
  plan->add_flag("--json", a.plan_json, "print JSON (parameters, micro_batch, total, items) instead of a table");
  plan->add_flag("--largest-micro-batch", a.plan_largest,
                 "plan the largest micro-batch that fits --gpu-memory instead of --micro-batch");
  CLI11_PARSE(app, argc, argv);

  try {
    if (*info) run_info(a);
    if (*init) run_init(a);
    if (*convert) run_convert(a);
    if (*logits) run_logits(a);
    if (*plan) run_plan(a);
  } catch (const std::exception& e) {
    std::cerr << "rho_model: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
