#include "librho/report/run_report.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "librho/report/svg_chart.h"
#include "librho/util/error.h"

namespace fs = std::filesystem;

namespace rho {
namespace {

constexpr const char* kPalette[] = {"#1f6fd1", "#d1421f", "#2e9e44", "#8e44ad", "#e08a00", "#00838f", "#6d4c41",
                                    "#c2185b"};
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double number_or_nan(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : kNaN;
}

using Curve = std::vector<std::pair<double, double>>;

// Runs sharing a label, in the order the labels first appear.
struct Group {
  std::string label, color;
  std::vector<const RunLog*> runs;
};

std::vector<Group> group_runs(const std::vector<RunLog>& runs) {
  std::vector<Group> groups;
  for (const auto& r : runs) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.label == r.label; });
    if (it == groups.end()) {
      groups.push_back({r.label, kPalette[groups.size() % std::size(kPalette)], {}});
      it = groups.end() - 1;
    }
    it->runs.push_back(&r);
  }
  return groups;
}

// One run's curve of a quantity over training tokens.
template <class Point, class Get>
Curve curve_of(const std::vector<Point>& points, Get get) {
  Curve c;
  for (const auto& p : points) c.emplace_back(static_cast<double>(p.tokens), get(p));
  return c;
}

// The mean of several runs' curves, point by point (their shortest length; x from the first).
Curve mean_curve(const std::vector<Curve>& curves) {
  if (curves.empty()) return {};
  size_t n = curves[0].size();
  for (const auto& c : curves) n = std::min(n, c.size());
  Curve out;
  for (size_t i = 0; i < n; ++i) {
    double sum = 0;
    for (const auto& c : curves) sum += c[i].second;
    out.emplace_back(curves[0][i].first, sum / static_cast<double>(curves.size()));
  }
  return out;
}

std::vector<Curve> eval_curves(const Group& g, const std::string& set, bool reference) {
  std::vector<Curve> out;
  for (const auto* r : g.runs)
    if (const auto* e = r->eval_set(set))
      out.push_back(curve_of(*e, [&](const RunEval& p) { return reference ? p.reference_loss : p.loss; }));
  return out;
}

bool any_finite(const Curve& c) {
  return std::any_of(c.begin(), c.end(), [](const auto& p) { return std::isfinite(p.second); });
}

// Thin lines for each run of a group with several, a thick one for the group (its mean).
void add_group_series(std::vector<ChartSeries>& series, const Group& g, const std::vector<Curve>& curves,
                      const std::string& suffix = {}, bool dashed = false) {
  if (curves.empty()) return;
  if (curves.size() > 1)
    for (const auto& c : curves) series.push_back({"", g.color, 1, dashed, c});
  series.push_back({g.label + suffix + (curves.size() > 1 ? fmt::format(" (mean of {})", curves.size()) : ""),
                    g.color, 2.5, dashed, mean_curve(curves)});
}

std::string fmt_loss(double v) { return std::isfinite(v) ? fmt::format("{:.4f}", v) : "–"; }
std::string fmt_tokens(double v) { return std::isfinite(v) ? fmt::format("{:.0f}", v) : "not reached"; }

struct Compared {
  std::string label;
  int64_t runs = 0;
  double final_tokens = kNaN, final_loss = kNaN, reach = kNaN, ratio = kNaN;
};

std::vector<Compared> compare_groups(const std::vector<Group>& groups, const std::string& set) {
  std::vector<Compared> out;
  double target = kNaN, budget = kNaN;
  for (const auto& g : groups) {
    Compared c{g.label, static_cast<int64_t>(g.runs.size())};
    const auto mean = mean_curve(eval_curves(g, set, false));
    if (!mean.empty()) {
      c.final_tokens = mean.back().first;
      c.final_loss = mean.back().second;
      if (out.empty()) target = c.final_loss, budget = c.final_tokens;
      c.reach = tokens_to_reach(mean, target);
      c.ratio = std::isfinite(c.reach) && c.reach > 0 ? budget / c.reach : kNaN;
    }
    out.push_back(c);
  }
  return out;
}

std::string runs_table(const std::vector<RunLog>& runs) {
  std::vector<std::string> sets;
  for (const auto& r : runs)
    for (const auto& [name, _] : r.evals)
      if (std::find(sets.begin(), sets.end(), name) == sets.end()) sets.push_back(name);
  std::string h = "<table><tr><th>run</th><th>folder</th><th>stage</th><th>steps</th><th>training tokens</th>";
  for (const auto& s : sets)
    h += fmt::format("<th>{0}: final loss</th><th>{0}: reference</th><th>{0}: gap</th>", html_escape(s));
  h += "</tr>\n";
  for (const auto& r : runs) {
    const auto last = r.train.empty() ? RunTrain{} : r.train.back();
    h += fmt::format("<tr><td class=l>{}</td><td class=l><code>{}</code></td><td class=l>{}</td><td>{}</td><td>{}</td>",
                     html_escape(r.label), html_escape(r.dir), html_escape(r.stage), last.step, last.tokens);
    for (const auto& s : sets) {
      const auto* e = r.eval_set(s);
      const RunEval p = e && !e->empty() ? e->back() : RunEval{};
      h += fmt::format("<td>{}</td><td>{}</td><td>{}</td>", fmt_loss(p.loss), fmt_loss(p.reference_loss),
                       std::isfinite(p.reference_loss) ? fmt::format("{:+.4f}", p.loss - p.reference_loss) : "–");
    }
    h += "</tr>\n";
  }
  return h + "</table>\n";
}

std::string reach_table(const std::vector<Compared>& rows, const std::string& set) {
  if (rows.empty() || !std::isfinite(rows[0].final_loss)) return {};
  std::string h = fmt::format(
      "<p>Target: <b>{}</b>'s final loss on <code>{}</code>, {:.4f}, after {:.0f} training tokens. For each run (a "
      "group: its mean curve), the training tokens at which its loss first reaches it (linear between evaluations), "
      "and the ratio of {}'s tokens to those.</p>\n<table><tr><th>run</th><th>runs</th><th>final loss</th>"
      "<th>training tokens</th><th>tokens to reach the target</th><th>ratio</th></tr>\n",
      html_escape(rows[0].label), html_escape(set), rows[0].final_loss, rows[0].final_tokens, html_escape(rows[0].label));
  for (const auto& c : rows)
    h += fmt::format("<tr><td class=l>{}</td><td>{}</td><td>{}</td><td>{:.0f}</td><td>{}</td><td>{}</td></tr>\n",
                     html_escape(c.label), c.runs, fmt_loss(c.final_loss), c.final_tokens, fmt_tokens(c.reach),
                     std::isfinite(c.ratio) ? fmt::format("{:.2f}×", c.ratio) : "–");
  return h + "</table>\n";
}

std::string eval_charts(const std::vector<RunLog>& runs, const std::vector<Group>& groups) {
  std::vector<std::string> sets;
  for (const auto& r : runs)
    for (const auto& [name, _] : r.evals)
      if (std::find(sets.begin(), sets.end(), name) == sets.end()) sets.push_back(name);
  std::string h;
  for (const auto& set : sets) {
    std::vector<ChartSeries> series;
    for (const auto& g : groups) add_group_series(series, g, eval_curves(g, set, false));
    // The reference's loss on the same windows, once per distinct curve (runs against one reference share it).
    std::vector<std::pair<Curve, std::string>> refs;
    for (const auto& g : groups) {
      const auto ref = mean_curve(eval_curves(g, set, true));
      if (!any_finite(ref)) continue;
      auto same = std::find_if(refs.begin(), refs.end(), [&](const auto& r) { return r.first == ref; });
      if (same == refs.end()) refs.emplace_back(ref, g.label);
      else same->second += ", " + g.label;
    }
    for (const auto& [ref, who] : refs)
      series.push_back({refs.size() == 1 ? "reference" : "reference (" + who + ")", "#777777", 1.5, true, ref});
    // The first evaluations (an untrained model's loss) would flatten the rest: with enough of them the axis
    // starts at the loss an eighth of the way through.
    double top = -std::numeric_limits<double>::infinity();
    size_t from = 0;
    for (const auto& c : series)
      if (c.points.size() >= 4) {
        from = std::max<size_t>(1, c.points.size() / 8);
        top = std::max(top, c.points[from].second);
      }
    ChartAxes axes{"Eval loss on '" + set + "' against training tokens", "training tokens", "loss", true};
    if (from > 0 && std::isfinite(top)) {
      axes.y_max = top;
      axes.title += fmt::format(" (y axis from evaluation {})", from + 1);
    }
    h += line_chart(series, axes);
  }
  return h;
}

std::string selection_charts(const std::vector<Group>& groups) {
  std::vector<ChartSeries> fraction, scores;
  for (const auto& g : groups) {
    std::vector<Curve> f, kept, dropped;
    for (const auto* r : g.runs) {
      if (r->stage != "slm") continue;
      f.push_back(curve_of(r->train, [](const RunTrain& p) { return p.selected_fraction; }));
      kept.push_back(curve_of(r->train, [](const RunTrain& p) { return p.kept_score; }));
      dropped.push_back(curve_of(r->train, [](const RunTrain& p) { return p.dropped_score; }));
    }
    if (f.empty()) continue;
    add_group_series(fraction, g, f);
    add_group_series(scores, g, kept, ", kept");
    add_group_series(scores, g, dropped, ", dropped", true);
  }
  if (fraction.empty()) return "<p>No SLM run among these.</p>\n";
  return line_chart(fraction, {"Selected fraction (effective) per logged step", "training tokens", "fraction", true}) +
         line_chart(scores, {"Mean score of kept and dropped tokens (excess loss for the paper's rule)",
                             "training tokens", "score (nats)", true});
}

std::string histogram_charts(const std::vector<Group>& groups) {
  std::string h;
  for (const auto& g : groups) {
    const RunLog* r = g.runs.front();
    const RunHistogram *all = nullptr, *kept = nullptr;
    for (const auto& x : r->histograms) {  // the last step's pair
      if (x.tag == "slm/score") all = &x, kept = nullptr;
      if (x.tag == "slm/score_kept" && all && x.step == all->step) kept = &x;
    }
    if (!all || all->histogram.limits.empty()) continue;
    const auto& lim = all->histogram.limits;
    const double width = lim.size() > 1 ? lim[1] - lim[0] : 1;
    std::vector<ChartBars> bars = {{"every valid token", "#9e9e9e", all->histogram.counts}};
    if (kept) bars.push_back({"kept", g.color, kept->histogram.counts});
    h += histogram_chart(lim, lim.front() - width, bars,
                         {fmt::format("Scores at step {} ({})", all->step,
                                      fs::path(r->dir).filename().string() == g.label
                                          ? g.label : g.label + ": " + fs::path(r->dir).filename().string()),
                          "score (nats)", "tokens", false, 680, 300});
  }
  return h;
}

}  // namespace

const std::vector<RunEval>* RunLog::eval_set(const std::string& name) const {
  for (const auto& [n, points] : evals)
    if (n == name) return &points;
  return nullptr;
}

RunLog read_run_log(const std::string& dir, const std::string& label) {
  RunLog run;
  run.dir = dir;
  run.label = label.empty() ? fs::path(dir).filename().string() : label;
  const auto path = (fs::path(dir) / "log.jsonl").string();
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open (is {} a rho_pretrain run folder?)", path, dir));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto where = fmt::format("{}:{}", path, i + 1);
    const auto j = nlohmann::json::parse(lines[i], nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      if (i + 1 == lines.size()) break;  // a torn last line: the run was interrupted while writing it
      throw Error(fmt::format("{}: not a JSON object", where));
    }
    const auto type = j.value("type", std::string());
    auto need = [&](const char* key) {
      if (!j.contains(key) || !j[key].is_number())
        throw Error(fmt::format("{}: the {} line has no number '{}'", where, type, key));
      return j[key].get<double>();
    };
    if (type == "train") {
      RunTrain t;
      t.step = static_cast<int64_t>(need("step"));
      t.tokens = static_cast<int64_t>(need("tokens"));
      t.loss = need("loss");
      t.loss_all = number_or_nan(j, "loss_all");
      t.selected_fraction = number_or_nan(j, "selected_fraction");
      t.kept_score = number_or_nan(j, "kept_score");
      t.dropped_score = number_or_nan(j, "dropped_score");
      run.train.push_back(t);
    } else if (type == "eval") {
      RunEval e;
      e.step = static_cast<int64_t>(need("step"));
      e.tokens = static_cast<int64_t>(need("tokens"));
      e.loss = need("loss");
      e.reference_loss = number_or_nan(j, "reference_loss");
      const auto set = j.value("set", std::string("eval"));
      auto it = std::find_if(run.evals.begin(), run.evals.end(), [&](const auto& p) { return p.first == set; });
      if (it == run.evals.end()) it = run.evals.insert(run.evals.end(), {set, {}});
      it->second.push_back(e);
    } else if (type == "histogram") {
      RunHistogram h;
      h.step = static_cast<int64_t>(need("step"));
      h.tag = j.value("tag", std::string());
      h.histogram = histogram_from_log_line(j, where);
      run.histograms.push_back(std::move(h));
    }
  }
  const auto config = fs::path(dir) / "config.yaml";
  if (fs::exists(config)) {
    try {
      const auto y = YAML::LoadFile(config.string());
      if (y["train"] && y["train"]["stage"]) run.stage = y["train"]["stage"].as<std::string>();
    } catch (const YAML::Exception& e) {
      throw Error(fmt::format("{}: {}", config.string(), e.what()));
    }
  }
  return run;
}

double tokens_to_reach(const std::vector<std::pair<double, double>>& curve, double target) {
  if (!curve.empty() && curve[0].second <= target) return curve[0].first;
  for (size_t i = 1; i < curve.size(); ++i) {
    const auto [t0, l0] = curve[i - 1];
    const auto [t1, l1] = curve[i];
    if (l1 <= target) return l0 == l1 ? t1 : t0 + (t1 - t0) * (l0 - target) / (l0 - l1);
  }
  return kNaN;
}

std::string render_run_report(const std::vector<RunLog>& runs, const RunReportOptions& options,
                              std::string* summary_json) {
  if (runs.empty()) throw Error("rho_report: no runs given");
  const auto groups = group_runs(runs);
  std::string set = options.target_set;
  if (set.empty() && !runs[0].evals.empty()) set = runs[0].evals[0].first;
  const auto compared = compare_groups(groups, set);
  if (summary_json) {
    nlohmann::json j = {{"target_set", set}, {"groups", nlohmann::json::array()}};
    for (const auto& c : compared) {
      auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
      j["groups"].push_back({{"label", c.label}, {"runs", c.runs}, {"final_tokens", num(c.final_tokens)},
                             {"final_loss", num(c.final_loss)}, {"tokens_to_reach_first", num(c.reach)},
                             {"ratio", num(c.ratio)}});
    }
    *summary_json = j.dump(2) + "\n";
  }
  std::string page = fmt::format(R"(<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{0}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;color:#222;line-height:1.45}}
table{{border-collapse:collapse;margin:.5rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}
td.l{{text-align:left}}svg{{display:block;margin:.8rem 0}}
.verdict{{background:#f4f7fb;border-left:4px solid #1f6fd1;padding:.7rem 1rem}}
pre{{background:#f7f7f7;padding:.5rem;white-space:pre-wrap;font-size:12px}}
iframe{{width:100%;height:34rem;border:1px solid #ddd;border-radius:6px}}</style></head><body>
<h1>{0}</h1>
)", html_escape(options.title));
  page += options.intro_html;
  page += "<h2>Runs</h2>\n" + runs_table(runs);
  page += "<h2>Eval loss against training tokens</h2>\n" + eval_charts(runs, groups);
  page += "<h2>Tokens to reach the first run's final loss</h2>\n" + reach_table(compared, set);
  page += "<h2>What SLM selects over training</h2>\n" + selection_charts(groups) + histogram_charts(groups);
  if (!options.token_view_html.empty())
    page += "<h2>Token view</h2>\n<p>A stretch of the corpus coloured by reference loss, by excess loss and by SLM's "
            "keep/drop decision; hover a token for its numbers.</p>\n<iframe title=\"token view\" srcdoc=\"" +
            html_escape(options.token_view_html) + "\"></iframe>\n";
  page += options.outro_html;
  page += fmt::format("<p>Written by rho_report from {} run(s)' log.jsonl.</p>\n</body></html>\n", runs.size());
  return page;
}

}  // namespace rho
