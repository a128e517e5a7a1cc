// rho_view: render a stretch of a token dataset as an HTML page coloured by reference loss, excess loss
// (against a second model's losses) or SLM's keep/drop decision at a ratio.
//   rho_view --data TOKENS --losses REF_LOSSES [--current-losses LOSSES] --start P --length N --out page.html

#include <CLI/CLI.hpp>
#include <iostream>

#include "librho/score/token_view.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

int main(int argc, char** argv) {
  CLI::App app{"librho token view: what SLM keeps, token by token"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::string data_dir, losses_dir, current_dir, tokenizer, out;
  int64_t start = 0, length = 600;
  rho::TokenViewOptions opt;
  app.add_option("--data", data_dir, "token dataset")->required();
  app.add_option("--losses", losses_dir, "reference losses (rho_score output for --data)")->required();
  app.add_option("--current-losses", current_dir, "a second model's losses (rho_score output): excess = current - reference");
  app.add_option("--tokenizer", tokenizer, "SentencePiece .model or tokenizer.json (default: the dataset's own)");
  app.add_option("--start", start, "first token position");
  app.add_option("--length", length, "number of tokens shown");
  app.add_option("--ratio", opt.ratio, "SLM ratio for the keep/drop view");
  app.add_option("--title", opt.title, "page heading");
  app.add_option("--out", out, "HTML file to write")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    const auto tokens = rho::token_view_tokens(data_dir, losses_dir, current_dir, tokenizer, start, length, &opt.subtitle);
    rho::write_file_atomic(out, rho::render_token_view(tokens, opt));
    std::cout << "wrote " << out << "\n";
  } catch (const std::exception& e) {
    std::cerr << "rho_view: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
