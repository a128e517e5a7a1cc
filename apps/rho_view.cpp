// rho_view: render a stretch of a token dataset as an HTML page coloured by reference loss, excess loss
// (against a second model's losses) or SLM's keep/drop decision at a ratio.
//   rho_view --data TOKENS --losses REF_LOSSES [--current-losses LOSSES] --start P --length N --out page.html

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <limits>

#include "librho/data/token_dataset.h"
#include "librho/score/token_scorer.h"
#include "librho/eval/text_tokenizer.h"
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
    auto data = rho::TokenDataset::open(data_dir);
    auto ref = rho::LossDataset::open(losses_dir);
    ref.check_matches(data);
    std::unique_ptr<rho::LossDataset> cur;
    if (!current_dir.empty()) {
      cur = std::make_unique<rho::LossDataset>(rho::LossDataset::open(current_dir));
      cur->check_matches(data);
    }
    if (tokenizer.empty()) tokenizer = (std::filesystem::path(data_dir) / data.manifest().tokenizer_name).string();
    const auto tok = rho::TextTokenizer::load(tokenizer);
    length = std::max<int64_t>(0, std::min(length, data.num_tokens() - start));
    const auto ids = data.slice(start, length);
    const auto pos = at::arange(start, start + length);
    const auto r = ref.gather(pos);
    const auto c = cur ? cur->gather(pos) : at::full({length}, std::numeric_limits<float>::quiet_NaN());
    std::vector<rho::TokenViewToken> tokens;
    for (int64_t i = 0; i < length; ++i)
      tokens.push_back({tok.piece_text(ids[i].item<int64_t>()), r[i].item<double>(), c[i].item<double>()});
    opt.subtitle = "tokens " + std::to_string(start) + "–" + std::to_string(start + length) + " of " + data_dir +
                   "; reference losses " + losses_dir + (cur ? "; current losses " + current_dir : "");
    rho::write_file_atomic(out, rho::render_token_view(tokens, opt));
    std::cout << "wrote " << out << "\n";
  } catch (const std::exception& e) {
    std::cerr << "rho_view: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
