// rho_categories: how token losses moved during a training run (H->H, L->H, H->L, L->L), from its checkpoints.
//   rho_categories --run RUN_DIR --data TOKEN_DATASET [--seq-len N] [--windows N] [--threshold NATS] [--json OUT]
// docs/training.md ("Token categories") describes the fit and the threshold.
#include <CLI/CLI.hpp>
#include <iostream>

#include "librho/eval/token_categories.h"
#include "librho/util/error.h"
#include "librho/util/device.h"
#include "librho/util/files.h"
#include "librho/util/host_memory.h"

int main(int argc, char** argv) {
  CLI::App app{"librho token categories: classify tokens by how their loss moved over a run's checkpoints"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::string run_dir, data_dir, json_out;
  rho::TokenCategoryOptions opt;
  bool quiet = false;
  app.add_option("--run", run_dir, "rho_pretrain output directory (its checkpoints/)")->required();
  app.add_option("--data", data_dir, "token dataset to sample (e.g. held-out target-domain text)")->required();
  app.add_option("--seq-len", opt.seq_len, "window length");
  app.add_option("--windows", opt.windows, "number of windows from the start of the dataset");
  app.add_option("--threshold", opt.threshold, "loss (nats) above which a token is high (default: the median fitted start loss)")
      ->default_str("");
  app.add_option("--device", opt.device, "auto, cpu or cuda");
  app.add_option("--json", json_out, "write the report here");
  app.add_flag("--quiet", quiet, "no progress line");
  CLI11_PARSE(app, argc, argv);
  try {
    opt.progress = !quiet;
    if (!rho::resolve_device(opt.device).is_cuda()) rho::keep_host_heap();  // (librho/util/host_memory.h)
    const auto report = rho::token_categories(run_dir, rho::TokenDataset::open(data_dir), opt);
    std::cout << report.table();
    if (!json_out.empty()) {
      rho::write_file_atomic(json_out, report.to_json());
      std::cout << "written: " << json_out << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "\nrho_categories: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
