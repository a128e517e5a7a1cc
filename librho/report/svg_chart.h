#pragma once
// Charts as inline SVG for self-contained HTML reports (no scripts, no network): line charts of series over a
// shared x axis and overlaid histograms, with axis ticks at round numbers (1, 2 or 5 times a power of ten).
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "librho/util/text.h"  // html_escape

namespace rho {

struct ChartSeries {
  std::string label;  // empty: not in the legend (e.g. one seed of a group drawn thin)
  std::string color = "#1f6fd1";
  double width = 2;
  bool dashed = false;
  std::vector<std::pair<double, double>> points;  // (x, y); non-finite y are skipped
};

struct ChartAxes {
  std::string title, x_label, y_label;
  bool x_tokens = false;  // x labels as token counts: 0, 200k, 1.5M
  int width = 680, height = 360;
  double y_max = NAN;     // finite: the y axis ends here (higher points are clipped at the frame)
};

// Ticks at round numbers covering [lo, hi]: the step is 1, 2 or 5 times a power of ten, chosen for about
// `target` intervals; the first tick is at or below lo, the last at or above hi.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

// A tick's label: as few decimals as the step needs; with `tokens`, k and M suffixes.
std::string tick_label(double value, double step, bool tokens);

std::string line_chart(const std::vector<ChartSeries>& series, const ChartAxes& axes);

// Histograms on shared buckets (right edges `limits`), drawn as overlaid bars: [(label, color, counts)].
struct ChartBars {
  std::string label, color;
  std::vector<double> counts;
};
std::string histogram_chart(const std::vector<double>& limits, double first_left, const std::vector<ChartBars>& bars,
                            const ChartAxes& axes);

}  // namespace rho
