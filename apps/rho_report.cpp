// rho_report: one self-contained HTML page comparing training runs (rho_pretrain output folders): eval loss
// against training tokens, the tokens each needs to reach the first run's final loss, SLM's selection statistics
// and score histograms, and a token view when loss datasets are given.
//   rho_report clm=runs/clm-1 clm=runs/clm-2 slm=runs/slm-1 slm=runs/slm-2 --out report.html
//   rho_report runs/a runs/b --view-data TOKENS --view-losses REF_LOSSES --view-current CLM_LOSSES --out r.html

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "librho/report/run_report.h"
#include "librho/score/token_view.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

int main(int argc, char** argv) {
  CLI::App app{"librho run report: compare training runs on one page"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::vector<std::string> runs;
  std::string out, intro, outro, json, token_view, view_data, view_losses, view_current;
  int64_t view_start = 0, view_length = 600;
  rho::RunReportOptions opt;
  rho::TokenViewOptions view;
  app.add_option("runs", runs, "run folders (DIR, or LABEL=DIR: runs with one label are a group, e.g. seeds)")
      ->required();
  app.add_option("--out", out, "HTML file to write")->required();
  app.add_option("--title", opt.title, "page heading");
  app.add_option("--set", opt.target_set, "eval set compared across runs (default: the first run's first)");
  app.add_option("--intro", intro, "HTML fragment file shown after the heading (a study's own summary)");
  app.add_option("--outro", outro, "HTML fragment file shown after the report's sections");
  app.add_option("--json", json, "also write the compared figures (final losses, tokens to reach, ratios) as JSON");
  app.add_option("--token-view", token_view, "a rho_view page to show in the report");
  app.add_option("--view-data", view_data, "token view from this token dataset (with --view-losses)");
  app.add_option("--view-losses", view_losses, "token view: reference losses (rho_score output for --view-data)");
  app.add_option("--view-current", view_current, "token view: a second model's losses (excess = current - reference)");
  app.add_option("--view-start", view_start, "token view: first token position");
  app.add_option("--view-length", view_length, "token view: number of tokens");
  app.add_option("--view-ratio", view.ratio, "token view: SLM ratio for the keep/drop colouring");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!view_data.empty() != !view_losses.empty())
      throw rho::Error("--view-data and --view-losses go together");
    if (!token_view.empty() && !view_data.empty()) throw rho::Error("give --token-view or --view-data, not both");
    std::vector<rho::RunLog> logs;
    for (const auto& r : runs) {
      const auto eq = r.find('=');
      logs.push_back(eq == std::string::npos ? rho::read_run_log(r, "")
                                             : rho::read_run_log(r.substr(eq + 1), r.substr(0, eq)));
    }
    if (!intro.empty()) opt.intro_html = rho::read_text_file(intro);
    if (!outro.empty()) opt.outro_html = rho::read_text_file(outro);
    if (!token_view.empty()) opt.token_view_html = rho::read_text_file(token_view);
    if (!view_data.empty()) {
      view.title = "Token view";
      const auto tokens = rho::token_view_tokens(view_data, view_losses, view_current, "", view_start, view_length,
                                                 &view.subtitle);
      opt.token_view_html = rho::render_token_view(tokens, view);
    }
    std::string summary;
    const auto page = rho::render_run_report(logs, opt, json.empty() ? nullptr : &summary);
    for (const auto& file : {out, json})
      if (const auto dir = std::filesystem::path(file).parent_path(); !file.empty() && !dir.empty())
        std::filesystem::create_directories(dir);
    rho::write_file_atomic(out, page);
    if (!json.empty()) rho::write_file_atomic(json, summary);
    std::cout << "wrote " << out << (json.empty() ? "" : " and " + json) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "rho_report: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
