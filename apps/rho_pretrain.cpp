// rho_pretrain: reference training (train.stage=clm) and Selective Language Modeling (train.stage=slm).
//   rho_pretrain CONFIG.yaml [--set section.key=value ...] [--resume [--allow-change section.key ...]]
// Data parallel when started by torchrun (--no-python) or srun with several processes: see docs/distributed.md.
#include <ATen/CPUGeneratorImpl.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <iostream>

#include "librho/dist/context.h"
#include "librho/train/trainer.h"
#include "librho/util/device.h"
#include "librho/util/host_memory.h"

int main(int argc, char** argv) {
  CLI::App app{"librho pretraining: CLM (reference) or SLM (selective) from one YAML config"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::string config;
  std::vector<std::string> overrides;
  bool resume = false;
  bool keys = false;
  app.add_option("config", config, "YAML run config (see docs/training.md)");
  app.add_flag("--keys", keys, "print every config key with its default and meaning (Markdown) and exit");
  app.add_option("--set", overrides, "override a config value: section.key=value (repeatable)");
  app.add_flag("--resume", resume, "continue exactly from the newest checkpoint in run.out_dir");
  std::vector<std::string> allow;
  app.add_option("--allow-change", allow,
                 "with --resume: accept a changed value of this key (section.key, repeatable), e.g. optim.max_steps; "
                 "accepted changes are logged in out_dir/config_changes.jsonl");
  CLI11_PARSE(app, argc, argv);
  if (keys) {
    std::cout << rho::TrainConfig::key_table();
    return 0;
  }
  if (config.empty()) {
    std::cerr << "rho_pretrain: a config file is required (rho_pretrain CONFIG.yaml; --help)\n";
    return 2;
  }
  std::string who;  // "rank r/n: " in a data-parallel run, so each process's error says whose it is
  try {
    auto cfg = rho::TrainConfig::from_yaml_file(config, overrides);
    cfg.resume_allow = allow;
    {
      // torch seeds its default CPU generator differently in every process; checkpoints save its state (rng.cpu),
      // so seed it from run.seed: two runs with one config then write identical checkpoints (a resume restores it).
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(static_cast<uint64_t>(cfg.seed));
    }
    const auto env = rho::DistEnv::from_env();
    if (env.world_size > 1) who = fmt::format("rank {}/{}: ", env.rank, env.world_size);
    const bool cuda = rho::resolve_device(cfg.device, "run.device").is_cuda();
    if (!cuda) rho::keep_host_heap();  // CPU runs reuse their tensors' memory (librho/util/host_memory.h)
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist_timeout * 1000));
    const auto group = rho::DistContext::connect(env, cuda, timeout);
    {
      rho::Trainer trainer(std::move(cfg), resume, group);
      trainer.run();
    }
    group->shutdown();  // every rank is past its last collective
  } catch (const std::exception& e) {
    std::cerr << "\nrho_pretrain: error: " << who << e.what() << "\n";
    return 1;
  }
  return 0;
}
