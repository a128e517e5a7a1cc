#include "librho/score/token_view.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <memory>
#include <cmath>
#include <vector>

#include "librho/data/token_dataset.h"
#include "librho/eval/text_tokenizer.h"
#include "librho/kernels/topk_mask.h"
#include "librho/score/token_scorer.h"
#include "librho/util/text.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/full.h>

namespace rho {
namespace {


std::string num(double v) { return std::isnan(v) ? "n/a" : fmt::format("{:.3f}", v); }

// White to a saturated colour, by t in [0, 1].
std::string tint(double t, int r, int g, int b) {
  t = std::clamp(t, 0.0, 1.0);
  auto mix = [&](int c) { return static_cast<int>(std::lround(255 - (255 - c) * t)); };
  return fmt::format("rgb({},{},{})", mix(r), mix(g), mix(b));
}

}  // namespace

std::string piece_to_text(const std::string& piece) {
  if (piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece.back() == '>')
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  std::string out;
  const std::string mark = "\xE2\x96\x81";  // U+2581, SentencePiece's word boundary
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, mark.size(), mark) == 0) {
      out += ' ';
      i += mark.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

namespace {
// What the page shows besides the text: each token's excess loss (or negative reference loss without a current
// model), whether SLM keeps it (the same top-k operator as training, over the shown tokens), and the colour scales.
struct ViewSelection {
  bool has_current = false;
  std::vector<float> excess;
  std::vector<char> kept;
  int64_t valid = 0, n_kept = 0;
  double max_ref = 1e-9, max_abs_excess = 1e-9;
};

ViewSelection select_for_view(const std::vector<TokenViewToken>& tokens, double ratio) {
  ViewSelection v;
  v.has_current = std::any_of(tokens.begin(), tokens.end(), [](const auto& t) { return !std::isnan(t.current); });
  v.excess.resize(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    v.excess[i] = static_cast<float>(v.has_current ? tokens[i].current - tokens[i].reference : -tokens[i].reference);
  for (float e : v.excess) v.valid += !std::isnan(e);
  v.kept.assign(tokens.size(), 0);
  if (!tokens.empty()) {
    const auto scores = at::from_blob(v.excess.data(), {static_cast<int64_t>(v.excess.size())}, at::kFloat);
    const auto mask = topk_mask(scores, static_cast<int64_t>(std::ceil(ratio * v.valid))).first.contiguous();
    const bool* m = mask.data_ptr<bool>();
    for (size_t i = 0; i < tokens.size(); ++i) v.kept[i] = m[i];
  }
  v.n_kept = std::count(v.kept.begin(), v.kept.end(), 1);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!std::isnan(tokens[i].reference)) v.max_ref = std::max(v.max_ref, tokens[i].reference);
    if (!std::isnan(v.excess[i])) v.max_abs_excess = std::max(v.max_abs_excess, std::fabs(double(v.excess[i])));
  }
  return v;
}

// The three views' token spans (reference loss, excess, kept), each token with its numbers as a tooltip.
struct ViewSpans {
  std::string ref, excess, kept;
};

ViewSpans token_spans(const std::vector<TokenViewToken>& tokens, const ViewSelection& v) {
  ViewSpans out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto& t = tokens[i];
    std::string shown;
    for (char c : html_escape(t.text)) shown += c == '\n' ? std::string("\xE2\x86\xB5<br>") : std::string(1, c);  // ↵, a break
    const std::string tip = fmt::format("#{} '{}' | reference loss {}{}{} | SLM {}", i, t.text, num(t.reference),
                                        v.has_current ? " | current loss " + num(t.current) : "",
                                        v.has_current ? " | excess " + num(v.excess[i]) : "",
                                        v.kept[i] ? "keeps" : "drops");
    const std::string title = html_escape(tip);
    const double e = v.excess[i];
    out.ref += fmt::format("<span title=\"{}\" style=\"background:{}\">{}</span>", title,
                           std::isnan(t.reference) ? "#eee" : tint(t.reference / v.max_ref, 220, 40, 40), shown);
    out.excess += fmt::format("<span title=\"{}\" style=\"background:{}\">{}</span>", title,
                              std::isnan(e) ? "#eee" : e >= 0 ? tint(e / v.max_abs_excess, 220, 40, 40)
                                                              : tint(-e / v.max_abs_excess, 40, 90, 220),
                              shown);
    out.kept += fmt::format("<span class=\"{}\" title=\"{}\">{}</span>", v.kept[i] ? "keep" : "drop", title, shown);
  }
  return out;
}
}  // namespace

std::string render_token_view(const std::vector<TokenViewToken>& tokens, const TokenViewOptions& opt) {
  const ViewSelection v = select_for_view(tokens, opt.ratio);
  const ViewSpans spans = token_spans(tokens, v);
  const std::string excess_label = v.has_current ? "excess loss (current − reference)" : "negative reference loss";
  return fmt::format(R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }}
h1 {{ font-size: 1.4rem; margin-bottom: .2rem; }} .sub {{ color: #666; margin-top: 0; }}
.tabs button {{ font: inherit; padding: .35rem .9rem; margin-right: .3rem; border: 1px solid #bbb; background: #f6f6f6; border-radius: 4px; cursor: pointer; }}
.tabs button.on {{ background: #222; color: #fff; border-color: #222; }}
.view {{ display: none; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 14px; line-height: 1.9; white-space: pre-wrap; word-break: break-word; border: 1px solid #ddd; border-radius: 6px; padding: 1rem; margin-top: .8rem; }}
.view.on {{ display: block; }}
.view span {{ border-radius: 2px; padding: 1px 0; }}
.view span:hover {{ outline: 2px solid #222; }}
.keep {{ background: #c9f2c7; }} .drop {{ background: #eee; color: #999; text-decoration: line-through; text-decoration-color: #bbb; }}
.legend {{ display: flex; gap: 1.2rem; align-items: center; font-size: .9rem; color: #444; margin-top: .6rem; }}
.bar {{ width: 9rem; height: .8rem; border-radius: 3px; display: inline-block; vertical-align: middle; }}
</style></head><body>
<h1>{title}</h1><p class="sub">{subtitle}</p>
<div class="tabs">
<button id="b-ref" onclick="show('ref')">reference loss</button>
<button id="b-excess" onclick="show('excess')">{excess_label}</button>
<button id="b-kept" class="on" onclick="show('kept')">{rule} keeps {kept} of {valid} tokens (ratio {ratio:.2f})</button>
</div>
<div class="legend">
<span><span class="bar" style="background:linear-gradient(90deg,#fff,rgb(220,40,40))"></span> reference loss 0 → {max_ref:.2f}</span>
<span><span class="bar" style="background:linear-gradient(90deg,rgb(40,90,220),#fff,rgb(220,40,40))"></span> excess −{max_ex:.2f} → +{max_ex:.2f}</span>
<span><span class="keep">&nbsp;kept&nbsp;</span> <span class="drop">&nbsp;dropped&nbsp;</span></span>
<span>hover a token for its numbers</span>
</div>
<div id="v-ref" class="view">{ref}</div>
<div id="v-excess" class="view">{excess}</div>
<div id="v-kept" class="view on">{keep}</div>
<script>
function show(v) {{
  for (const k of ['ref', 'excess', 'kept']) {{
    document.getElementById('v-' + k).classList.toggle('on', k === v);
    document.getElementById('b-' + k).classList.toggle('on', k === v);
  }}
}}
</script>
</body></html>
)HTML",
                     fmt::arg("title", html_escape(opt.title)), fmt::arg("subtitle", html_escape(opt.subtitle)),
                     fmt::arg("excess_label", html_escape(excess_label)),
                     fmt::arg("rule", v.has_current ? "SLM (excess loss)" : "lowest reference loss"),
                     fmt::arg("kept", v.n_kept), fmt::arg("valid", v.valid), fmt::arg("ratio", opt.ratio),
                     fmt::arg("max_ref", v.max_ref), fmt::arg("max_ex", v.max_abs_excess), fmt::arg("ref", spans.ref),
                     fmt::arg("excess", spans.excess), fmt::arg("keep", spans.kept));
}

std::vector<TokenViewToken> token_view_tokens(const std::string& data_dir, const std::string& losses_dir,
                                              const std::string& current_dir, std::string tokenizer, int64_t start,
                                              int64_t length, std::string* subtitle) {
  auto data = TokenDataset::open(data_dir);
  auto ref = LossDataset::open(losses_dir);
  ref.check_matches(data);
  std::unique_ptr<LossDataset> cur;
  if (!current_dir.empty()) {
    cur = std::make_unique<LossDataset>(LossDataset::open(current_dir));
    cur->check_matches(data);
  }
  if (tokenizer.empty()) tokenizer = (std::filesystem::path(data_dir) / data.manifest().tokenizer_name).string();
  const auto tok = TextTokenizer::load(tokenizer);
  start = std::max<int64_t>(0, std::min(start, data.num_tokens()));
  length = std::max<int64_t>(0, std::min(length, data.num_tokens() - start));
  const auto ids = data.slice(start, length);
  const auto pos = at::arange(start, start + length);
  const auto r = ref.gather(pos);
  const auto c = cur ? cur->gather(pos) : at::full({length}, std::numeric_limits<float>::quiet_NaN());
  std::vector<TokenViewToken> tokens;
  for (int64_t i = 0; i < length; ++i)
    tokens.push_back({tok.piece_text(ids[i].item<int64_t>()), r[i].item<double>(), c[i].item<double>()});
  if (subtitle)
    *subtitle = fmt::format("tokens {}–{} of {}; reference losses {}{}", start, start + length, data_dir, losses_dir,
                            cur ? "; current losses " + current_dir : "");
  return tokens;
}

}  // namespace rho
