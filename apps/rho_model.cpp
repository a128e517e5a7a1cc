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
#include "librho/util/files.h"

namespace fs = std::filesystem;

static rho::LlamaConfig read_config(const std::string& path) {
  if (fs::is_directory(path)) return rho::LlamaConfig::from_hf_json_file((fs::path(path) / "config.json").string());
  if (fs::path(path).extension() == ".json") return rho::LlamaConfig::from_hf_json_file(path);
  return rho::LlamaConfig::from_yaml_file(path);
}

int main(int argc, char** argv) {
  CLI::App app{"librho model tool"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.require_subcommand(1);
  std::string in, out, tokens_path, dtype = "float32";
  uint64_t seed = 0;
  int64_t shard_bytes = 5'000'000'000;

  auto* info = app.add_subcommand("info", "print the parameter count of a model config");
  info->add_option("config", in, "YAML config, config.json or HF directory")->required();
  std::string json_out;
  info->add_option("--config-json", json_out, "also write the config as a Hugging Face config.json here");
  auto* init = app.add_subcommand("init", "save a randomly initialised model in Hugging Face layout");
  init->add_option("config", in, "YAML config, config.json or HF directory")->required();
  init->add_option("--out", out, "Hugging Face directory to write")->required();
  init->add_option("--seed", seed, "initialisation seed (the trainer's run.seed gives the same weights)");
  auto* convert = app.add_subcommand("convert", "load a Hugging Face checkpoint and save it again");
  convert->add_option("input", in, "Hugging Face directory to read")->required();
  convert->add_option("--out", out, "Hugging Face directory to write")->required();
  for (auto* sub : {init, convert}) {
    sub->add_option("--dtype", dtype, "float32, bfloat16 or float16");
    sub->add_option("--max-shard-bytes", shard_bytes, "largest safetensors file; bigger models are split into an index and shards");
  }
  auto* logits = app.add_subcommand("logits", "write logits and per-token losses for given tokens");
  logits->add_option("input", in, "HF directory")->required();
  logits->add_option("--tokens", tokens_path, "safetensors file with an int64 'tokens' [batch, seq+1]")->required();
  logits->add_option("--out", out, "safetensors file to write: 'logits' [batch, seq, vocab] and 'token_loss' [batch, seq]")->required();
  auto* plan = app.add_subcommand("plan", "print the memory per device of a training step, by category, and whether it fits");
  plan->add_option("config", in, "YAML config, config.json or HF directory")->required();
  rho::MemoryPlanOptions po;
  std::string sharding = "none", precision = "bf16";
  bool plan_json = false;
  plan->add_option("--gpus", po.world_size, "data-parallel devices (ranks)")->check(CLI::PositiveNumber);
  plan->add_option("--gpu-memory", po.device_gib, "memory of one device, GiB")->check(CLI::PositiveNumber);
  plan->add_option("--seq-len", po.seq_len, "tokens per sequence (data.seq_len)");
  plan->add_option("--micro-batch", po.micro_batch, "sequences per device per micro-batch (data.batch_size)")
      ->check(CLI::PositiveNumber);
  plan->add_option("--grad-accum", po.grad_accum, "micro-batches per step (data.grad_accum)");
  plan->add_option("--sharding", sharding, "train.sharding: none, optimizer, gradients or parameters")
      ->check(CLI::IsMember({"none", "optimizer", "gradients", "parameters"}));
  plan->add_option("--precision", precision, "bf16 (autocast, as on CUDA) or fp32")->check(CLI::IsMember({"bf16", "fp32"}));
  plan->add_flag("--activation-checkpointing", po.activation_checkpointing, "train.activation_checkpointing");
  std::string backend = "nccl";
  plan->add_option("--backend", backend, "collectives: nccl (GPUs) or gloo (CPUs: one more buffer per reduce-scatter)")
      ->check(CLI::IsMember({"nccl", "gloo"}));
  plan->add_flag("--json", plan_json, "print JSON (parameters, total, items) instead of a table");
  bool plan_largest = false;
  plan->add_flag("--largest-micro-batch", plan_largest,
                 "plan the largest micro-batch that fits --gpu-memory instead of --micro-batch (JSON: largest_micro_batch)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (*info) {
      const auto c = read_config(in);
      if (!json_out.empty()) rho::write_file_atomic(json_out, c.to_hf_json());
      std::cout << fmt::format("{{\"config\": \"{}\", \"parameters\": {}}}\n", in, c.num_parameters());
    } else if (*init) {
      rho::Llama model(read_config(in));
      model->reset_parameters(seed);
      rho::save_hf_model(*model, out, {dtype, shard_bytes});
      std::cout << fmt::format("saved {} ({} parameters)\n", out, model->num_parameters());
    } else if (*convert) {
      auto model = rho::load_hf_model(in);
      rho::save_hf_model(*model, out, {dtype, shard_bytes});
      std::cout << fmt::format("saved {} ({} parameters)\n", out, model->num_parameters());
    } else if (*plan) {
      for (const auto& [level, name] : rho::kShardingNames)
        if (sharding == name) po.sharding = level;
      po.bf16 = precision == "bf16";
      po.gloo = backend == "gloo";
      const auto config = read_config(in);
      if (plan_largest) {
        po.micro_batch = rho::largest_micro_batch(config, po);
        if (po.micro_batch == 0) {
          po.micro_batch = 1;
          throw rho::Error(fmt::format("not even a micro-batch of one sequence fits --gpu-memory {:g} GiB: it needs {:.2f} GiB",
                                       po.device_gib, rho::plan_memory(config, po).total() / double(1 << 30)));
        }
        if (!plan_json) std::cout << fmt::format("largest micro-batch that fits: {}\n\n", po.micro_batch);
      }
      const auto result = rho::plan_memory(config, po);
      std::cout << (plan_json ? result.json() + "\n" : result.table(po));
    } else if (*logits) {
      auto model = rho::load_hf_model(in);
      model->eval();
      at::NoGradGuard no_grad;
      auto all = rho::SafetensorsFile::open(tokens_path).tensor("tokens").to(at::kLong);
      auto x = all.narrow(1, 0, all.size(1) - 1), y = all.narrow(1, 1, all.size(1) - 1);
      auto h = model->hidden_states(x);
      rho::save_safetensors(out, {{"logits", model->logits(h)}, {"token_loss", model->token_loss_from_hidden(h, y)}});
    }
  } catch (const std::exception& e) {
    std::cerr << "rho_model: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
