// rho_pretrain: reference training (train.stage=clm) and Selective Language Modeling (train.stage=slm).
//   rho_pretrain CONFIG.yaml [--set section.key=value ...] [--resume]
#include <CLI/CLI.hpp>
#include <iostream>

#include "librho/train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"librho pretraining: CLM (reference) or SLM (selective) from one YAML config"};
  std::string config;
  std::vector<std::string> overrides;
  bool resume = false;
  app.add_option("config", config, "YAML run config (see docs/training.md)")->required();
  app.add_option("--set", overrides, "override a config value: section.key=value (repeatable)");
  app.add_flag("--resume", resume, "continue exactly from the newest checkpoint in run.out_dir");
  CLI11_PARSE(app, argc, argv);
  try {
    rho::Trainer trainer(rho::TrainConfig::from_yaml_file(config, overrides), resume);
    trainer.run();
  } catch (const std::exception& e) {
    std::cerr << "\nrho_pretrain: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
