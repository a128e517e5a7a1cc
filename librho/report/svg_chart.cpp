#include "librho/report/svg_chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace rho {
namespace {

struct Frame {  // the plot area inside the chart, and the data range it maps
  double left = 70, right = 18, top = 36, bottom = 48;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  int width = 0, height = 0;
  double X(double x) const { return left + (x - x0) / (x1 - x0) * (width - left - right); }
  double Y(double y) const { return top + (y1 - y) / (y1 - y0) * (height - top - bottom); }
};

double tick_step(const std::vector<double>& ticks) { return ticks.size() > 1 ? ticks[1] - ticks[0] : 1; }

// Background, title, grid, tick labels and axis names.
std::string axes_svg(const Frame& f, const std::vector<double>& xt, const std::vector<double>& yt, const ChartAxes& a) {
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"DejaVu Sans, sans-serif\" font-size=\"12\">\n<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{3}</text>\n",
      f.width, f.height, f.width / 2.0, html_escape(a.title));
  const double xs = tick_step(xt), ys = tick_step(yt);
  for (double y : yt)
    s += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#eee\"/>"
                     "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n",
                     f.left, f.width - f.right, f.Y(y), f.Y(y), f.left - 6, f.Y(y) + 4, tick_label(y, ys, false));
  for (double x : xt)
    s += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#f3f3f3\"/>"
                     "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                     f.X(x), f.X(x), f.top, f.height - f.bottom, f.X(x), f.height - f.bottom + 16,
                     tick_label(x, xs, a.x_tokens));
  s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" stroke=\"#999\"/>\n",
                   f.left, f.top, f.width - f.left - f.right, f.height - f.top - f.bottom);
  s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (f.left + f.width - f.right) / 2,
                   f.height - 10, html_escape(a.x_label));
  s += fmt::format("<text transform=\"translate(16,{:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                   (f.top + f.height - f.bottom) / 2, html_escape(a.y_label));
  return s;
}

std::string legend_svg(const Frame& f, const std::vector<std::pair<std::string, std::string>>& items, bool dashed_too,
                       const std::vector<bool>& dashed) {
  std::string s;
  double y = f.top + 12;
  for (size_t i = 0; i < items.size(); ++i) {
    const double x = f.width - f.right - 190;
    s += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"3\"{}/>"
                     "<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n",
                     x, x + 24, y, y, items[i].second, dashed_too && dashed[i] ? " stroke-dasharray=\"5 3\"" : "",
                     x + 30, y + 4, html_escape(items[i].first));
    y += 17;
  }
  return s;
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (hi < lo) std::swap(lo, hi);
  double span = hi - lo;
  if (span <= 0) span = std::abs(hi) > 0 ? std::abs(hi) * 0.1 : 1;
  const double raw = span / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double k = first; k <= std::max(last, first + 1); k += 1) ticks.push_back(k * step);
  return ticks;
}

std::string tick_label(double value, double step, bool tokens) {
  if (std::abs(value) < step * 1e-9) return "0";
  double scale = 1;
  const char* suffix = "";
  if (tokens && std::abs(value) >= 1e9) scale = 1e9, suffix = "B";
  else if (tokens && std::abs(value) >= 1e6) scale = 1e6, suffix = "M";
  else if (tokens && std::abs(value) >= 1e3) scale = 1e3, suffix = "k";
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step / scale) + 1e-9)));
  return fmt::format("{:.{}f}{}", value / scale, decimals, suffix);
}

std::string line_chart(const std::vector<ChartSeries>& series, const ChartAxes& axes) {
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (std::isfinite(axes.y_max) && axes.y_max > y0) y1 = std::min(y1, axes.y_max);
  const auto xt = nice_ticks(x0, x1, 6), yt = nice_ticks(y0, y1, 5);
  Frame f;
  f.width = axes.width, f.height = axes.height;
  f.x0 = xt.front(), f.x1 = xt.back(), f.y0 = yt.front(), f.y1 = yt.back();
  // Lines stay inside the frame (points above a y_max leave it at the top).
  static int charts = 0;
  const auto clip = fmt::format("plot{}", ++charts);
  std::string s = axes_svg(f, xt, yt, axes);
  s += fmt::format("<clipPath id=\"{}\"><rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\"/></clipPath>\n"
                   "<g clip-path=\"url(#{})\">\n",
                   clip, f.left, f.top, f.width - f.left - f.right, f.height - f.top - f.bottom, clip);
  std::vector<std::pair<std::string, std::string>> legend;
  std::vector<bool> dashed;
  for (const auto& c : series) {
    std::string pts;
    for (const auto& [x, y] : c.points)
      if (std::isfinite(x) && std::isfinite(y)) pts += fmt::format("{:.1f},{:.1f} ", f.X(x), f.Y(y));
    if (pts.empty()) continue;
    s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"{}/>\n", pts, c.color,
                     c.width, c.dashed ? " stroke-dasharray=\"5 3\"" : "");
    if (!c.label.empty()) legend.emplace_back(c.label, c.color), dashed.push_back(c.dashed);
  }
  return s + "</g>\n" + legend_svg(f, legend, true, dashed) + "</svg>\n";
}

std::string histogram_chart(const std::vector<double>& limits, double first_left, const std::vector<ChartBars>& bars,
                            const ChartAxes& axes) {
  double top = 0;
  for (const auto& b : bars)
    for (double c : b.counts) top = std::max(top, c);
  const double right = limits.empty() ? first_left + 1 : limits.back();
  const auto xt = nice_ticks(first_left, right, 6), yt = nice_ticks(0, top > 0 ? top : 1, 4);
  Frame f;
  f.width = axes.width, f.height = axes.height;
  f.x0 = xt.front(), f.x1 = xt.back(), f.y0 = 0, f.y1 = yt.back();
  std::string s = axes_svg(f, xt, yt, axes);
  std::vector<std::pair<std::string, std::string>> legend;
  for (const auto& b : bars) {
    double left = first_left;
    for (size_t i = 0; i < limits.size() && i < b.counts.size(); ++i) {
      if (b.counts[i] > 0)
        s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\" "
                         "fill-opacity=\"0.55\"/>\n",
                         f.X(left), f.Y(b.counts[i]), std::max(0.5, f.X(limits[i]) - f.X(left)),
                         f.Y(0) - f.Y(b.counts[i]), b.color);
      left = limits[i];
    }
    legend.emplace_back(b.label, b.color);
  }
  return s + legend_svg(f, legend, false, std::vector<bool>(legend.size(), false)) + "</svg>\n";
}

}  // namespace rho
