#pragma once
// Comparing training runs on one page (rho_report). Each run's log.jsonl is read back (read_run_log), then
// render_run_report writes a self-contained HTML page (inline SVG, no scripts needed, no network):
//   - the runs: stage, steps, tokens, final loss on each eval set, the reference's loss and the gap;
//   - eval loss against training tokens, one chart per eval set, with the reference's loss where logged;
//   - the tokens each run needs to reach the first run's final loss on the target set, and the ratio;
//   - SLM's selection over training: selected fraction, mean score of kept and dropped tokens, and the last
//     score histograms (all tokens and kept ones) where the run logged them (train.histogram_every);
//   - a token view (librho/score/token_view.h) when one is given.
// Runs given the same label form a group (the seeds of one setting): each run is drawn thin, the group's mean
// thick, and groups are compared by their mean curves.
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "librho/train/tensorboard.h"

namespace rho {

struct RunEval {
  int64_t step = 0, tokens = 0;
  double loss = NAN, reference_loss = NAN;  // reference_loss: NaN when the run did not log it
};

struct RunTrain {
  int64_t step = 0, tokens = 0;
  double loss = NAN, loss_all = NAN, selected_fraction = 1, kept_score = NAN, dropped_score = NAN;
};

struct RunHistogram {
  int64_t step = 0;
  std::string tag;  // slm/score, slm/score_kept
  Histogram histogram;
};

struct RunLog {
  std::string label, dir;
  std::string stage;  // the run's config.yaml train.stage (clm, slm), empty without one
  std::vector<RunTrain> train;
  std::vector<std::pair<std::string, std::vector<RunEval>>> evals;  // per eval set, sets in the log's order
  std::vector<RunHistogram> histograms;
  const std::vector<RunEval>* eval_set(const std::string& name) const;  // null when the run has no such set
};

// Reads DIR/log.jsonl (and DIR/config.yaml's stage when present). Throws rho::Error naming file and line for a
// line that is not a JSON object or lacks a field its type needs; a torn last line (an interrupted run) is skipped.
RunLog read_run_log(const std::string& dir, const std::string& label);

// Training tokens at which a curve of (tokens, loss) first reaches `target` (linear between points); NaN if never.
double tokens_to_reach(const std::vector<std::pair<double, double>>& curve, double target);

struct RunReportOptions {
  std::string title = "librho runs";
  std::string intro_html;       // inserted after the title (e.g. a study's own summary)
  std::string outro_html;       // appended after the report's own sections (e.g. a study's details)
  std::string token_view_html;  // a rendered token view page, shown in a frame (empty: none)
  std::string target_set;       // the eval set compared across runs (empty: the first run's first set)
};

// The page. With `summary_json`, also the compared figures as JSON: per group its runs, final tokens and target
// loss (mean), the tokens to reach the first group's final loss, and the ratio.
std::string render_run_report(const std::vector<RunLog>& runs, const RunReportOptions& options,
                              std::string* summary_json = nullptr);

}  // namespace rho
