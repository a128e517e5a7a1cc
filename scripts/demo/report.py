"""The demo report: target-domain loss against training tokens for CLM and SLM (all seeds), few-shot accuracy,
the tokens SLM needs to reach the baseline's final loss, the SLM variants side by side, token categories, noise
statistics, and the token view. Writes
report/report.html with one SVG file per plot, plus report/summary.json. States what happened, whichever way."""
import html
import json
import math
from pathlib import Path

COLORS = {"clm": "#7a7a7a", "slm": "#1f6fd1"}
NAMES = {"clm": "CLM baseline", "slm": "SLM (Rho-1)"}


def eval_curve(run_dir, name="target"):
    pts = []
    for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
        j = json.loads(line)
        if j.get("type") == "eval" and j.get("set") == name:
            pts.append((j["tokens"], j["loss"]))
    return pts


def tokens_to_reach(curve, target):
    """Training tokens at which a curve first reaches `target` (linear between evaluations); None if never."""
    for (t0, l0), (t1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            return t1 if l0 == l1 else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def svg_lines(series, title, xlabel, ylabel, width=640, height=380):
    """series: [(label, color, width, dash, [(x, y)])] -> an SVG line chart."""
    xs = [x for *_, pts in series for x, _ in pts]
    ys = [y for *_, pts in series for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.06 or 0.1
    y0, y1 = y0 - pad, y1 + pad
    L, R, T, B = 64, 16, 34, 46

    def X(x):
        return L + (x - x0) / ((x1 - x0) or 1) * (width - L - R)

    def Y(y):
        return T + (y1 - y) / ((y1 - y0) or 1) * (height - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="DejaVu Sans, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
           f'{html.escape(title)}</text>']
    for i in range(6):
        yv = y0 + (y1 - y0) * i / 5
        out.append(f'<line x1="{L}" x2="{width - R}" y1="{Y(yv):.1f}" y2="{Y(yv):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 6}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:.3f}</text>')
        xv = x0 + (x1 - x0) * i / 5
        out.append(f'<text x="{X(xv):.1f}" y="{height - B + 16}" text-anchor="middle">{xv / 1e3:.0f}k</text>')
    out.append(f'<text x="{(L + width - R) / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text transform="translate(14,{(T + height - B) / 2}) rotate(-90)" text-anchor="middle">'
               f'{html.escape(ylabel)}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{width - L - R}" height="{height - T - B}" fill="none" stroke="#999"/>')
    for label, color, w, dash, pts in series:
        d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{w}"'
                   f'{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/>')
    ly = T + 10
    for label, color, w, dash, _ in series:
        if not label:
            continue
        out.append(f'<line x1="{width - R - 170}" x2="{width - R - 145}" y1="{ly}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="{w}"/><text x="{width - R - 140}" y="{ly + 4}">{html.escape(label)}</text>')
        ly += 18
    out.append("</svg>")
    return "\n".join(out)


def mean_curve(curves):
    n = min(len(c) for c in curves)
    return [(curves[0][i][0], sum(c[i][1] for c in curves) / len(curves)) for i in range(n)]


def analyse(out, cfg, runs, evals):
    curves = {k: [eval_curve(r) for r in v] for k, v in runs.items()}
    final = {k: [c[-1][1] for c in v] for k, v in curves.items()}
    acc = {k: [evals[r.name]["fewshot"][0]["accuracy"] for r in v] for k, v in runs.items()}
    budget = curves["clm"][0][-1][0]
    reach = [tokens_to_reach(s, c[-1][1]) for s, c in zip(curves["slm"], curves["clm"])]
    s = {
        "seeds": len(runs["clm"]),
        "training_tokens": budget,
        "final_target_loss": {k: v for k, v in final.items()},
        "final_target_loss_mean": {k: mean(v) for k, v in final.items()},
        "fewshot_accuracy": acc,
        "fewshot_accuracy_mean": {k: mean(v) for k, v in acc.items()},
        "slm_tokens_to_reach_clm_final": reach,
        "tokens_ratio": [budget / r if r else None for r in reach],
        "reference": {"target_loss": evals["reference"]["heldout"][0]["loss"],
                      "fewshot_accuracy": evals["reference"]["fewshot"][0]["accuracy"]},
    }
    first = evals[runs["clm"][0].name]["fewshot"][0]
    s["eval_items"] = first["items"]
    s["eval_mode"] = "Few-shot" if cfg.get("eval", {}).get("fewshot") else "Zero-shot"
    s["slm_wins_loss"] = s["final_target_loss_mean"]["slm"] < s["final_target_loss_mean"]["clm"]
    s["slm_wins_accuracy"] = s["fewshot_accuracy_mean"]["slm"] > s["fewshot_accuracy_mean"]["clm"]
    s["slm_reaches_baseline_earlier"] = all(r is not None and r < budget for r in reach)
    s["variants"] = variants_summary(runs, evals, curves["clm"])
    return s, curves


def variants_summary(runs, evals, curves_clm):
    """Every run kind (CLM, SLM, each variant): final target loss and accuracy per seed and their means, the mean
    selected (effective) fraction, and the tokens-to-baseline ratio."""
    out = {}
    for kind, dirs in runs.items():
        curves = [eval_curve(r) for r in dirs]
        final = [c[-1][1] for c in curves]
        acc = [evals[r.name]["fewshot"][0]["accuracy"] for r in dirs]
        fractions = [j["selected_fraction"] for r in dirs for j in map(json.loads, (Path(r) / "log.jsonl")
                     .read_text().splitlines()) if j.get("type") == "train"]
        budget = curves_clm[0][-1][0]
        reach = [tokens_to_reach(c, base[-1][1]) for c, base in zip(curves, curves_clm)]
        out[kind] = {"final_target_loss": final, "final_target_loss_mean": mean(final), "accuracy": acc,
                     "accuracy_mean": mean(acc), "selected_fraction_mean": mean(fractions),
                     "tokens_ratio": [budget / r if r else None for r in reach]}
    return out


def verdict(s):
    loss, acc = s["final_target_loss_mean"], s["fewshot_accuracy_mean"]
    parts = []
    if s["slm_wins_loss"]:
        parts.append(f"SLM ends with a lower target-domain loss than the CLM baseline ({loss['slm']:.4f} vs "
                     f"{loss['clm']:.4f}, mean of {s['seeds']} seeds).")
    else:
        parts.append(f"SLM does <b>not</b> beat the CLM baseline on target-domain loss ({loss['slm']:.4f} vs "
                     f"{loss['clm']:.4f}, mean of {s['seeds']} seeds).")
    ratios = [r for r in s["tokens_ratio"] if r]
    if s["slm_reaches_baseline_earlier"]:
        parts.append(f"It reaches the baseline's final loss after {mean(s['slm_tokens_to_reach_clm_final']):,.0f} of "
                     f"{s['training_tokens']:,} training tokens: {mean(ratios):.2f}x fewer tokens.")
    else:
        parts.append("It does not reach the baseline's final loss in every seed within the same budget "
                     f"({sum(1 for r in s['slm_tokens_to_reach_clm_final'] if r)} of {s['seeds']} seeds do).")
    n = s["eval_items"]
    # Two standard errors of the difference of two accuracies, each over n items x seeds answers.
    answers = n * s["seeds"]
    noise = math.sqrt(sum(max(p, 1.0 / answers) * (1 - p) for p in (acc["clm"], acc["slm"])) / answers)
    parts.append(f"{s['eval_mode']} accuracy on {n} held-out problems: SLM {acc['slm']:.1%}, CLM {acc['clm']:.1%} "
                 f"(reference model {s['reference']['fewshot_accuracy']:.1%})" +
                 ("." if s["slm_wins_accuracy"] else ": SLM does not win on accuracy here."))
    if abs(acc["slm"] - acc["clm"]) < 2 * noise:
        parts.append(f"The difference is within sampling noise (two standard errors of the difference: "
                     f"±{2 * noise:.1%}).")
        if max(acc["clm"], acc["slm"]) < 0.05:
            parts.append("Both are near the floor: these runs are too short for the model to learn to solve the "
                         "problems (configs/demo/accuracy.yaml trains long enough).")
    else:
        parts.append(f"The difference is larger than sampling noise (two standard errors of the difference: "
                     f"±{2 * noise:.1%}).")
    return " ".join(parts)


def variants_html(s, cfg):
    names = {"clm": "CLM baseline", "slm": "SLM, paper setting"}
    rows = []
    clm = s["variants"]["clm"]["final_target_loss_mean"]
    for kind, v in s["variants"].items():
        setting = html.escape(json.dumps(cfg.get("variants", {}).get(kind, {}))) if kind not in names else ""
        ratios = [r for r in v["tokens_ratio"] if r]
        reached = f"{mean(ratios):.2f}x ({len(ratios)}/{len(v['tokens_ratio'])})" if ratios else "not reached"
        rows.append(f"<tr><td style='text-align:left'>{names.get(kind, kind)}</td>"
                    f"<td style='text-align:left'><code>{setting}</code></td>"
                    f"<td>{v['final_target_loss_mean']:.4f}</td><td>{v['final_target_loss_mean'] - clm:+.4f}</td>"
                    f"<td>{' / '.join(f'{x:.4f}' for x in v['final_target_loss'])}</td>"
                    f"<td>{v['accuracy_mean']:.1%}</td><td>{v['selected_fraction_mean']:.2f}</td>"
                    f"<td>{reached}</td></tr>")
    return ("<table><tr><th>run</th><th>setting (over the paper's)</th><th>target loss (mean)</th><th>vs CLM</th>"
            "<th>per seed</th><th>accuracy (mean)</th><th>effective selected fraction</th>"
            "<th>tokens ratio (seeds reaching CLM's final loss)</th></tr>" + "".join(rows) + "</table>")


def categories_html(categories):
    if not categories:
        return ""
    names = ["H->H", "L->H", "H->L", "L->L"]
    rows = []
    for kind, c in categories.items():
        cells = "".join(f"<td>{c['categories'][n]['share']:.1%}</td>" for n in names)
        rows.append(f"<tr><td style='text-align:left'>{NAMES.get(kind, kind)}</td>{cells}<td>{c['tokens']:,}</td>"
                    f"<td>{c['threshold']:.3f}</td><td>{len(c['checkpoints'])}</td></tr>")
    return ("<h2>Token categories</h2><p>Each corpus token of a fixed sample, scored by every checkpoint of the first "
            "seed's run; a least-squares line through its losses over training tokens gives a start and an end loss, "
            "each high or low against one threshold (the CLM run's median fitted start loss): H-&gt;H stays hard, L-&gt;H gets worse, "
            "H-&gt;L is learned, L-&gt;L was easy all along (the paper's Figure 2 analysis; "
            "<code>rho_categories</code>).</p><table><tr><th>run</th>" +
            "".join(f"<th>{html.escape(n)}</th>" for n in names) +
            "<th>tokens</th><th>threshold (nats)</th><th>checkpoints</th></tr>" + "".join(rows) + "</table>")


def write(out, cfg, runs, evals, view, categories=None):
    out = Path(out)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    s, curves = analyse(out, cfg, runs, evals)
    s["token_categories"] = {k: {n: c["categories"][n]["share"] for n in c["categories"]}
                             for k, c in (categories or {}).items()}
    (rep / "summary.json").write_text(json.dumps(s, indent=2) + "\n")

    series = []
    for k in ("clm", "slm"):
        for c in curves[k]:
            series.append(("", COLORS[k], 1, "4 3", c))
        series.append((f"{NAMES[k]} (mean)", COLORS[k], 3, None, mean_curve(curves[k])))
    # The reference's loss on the same evaluation windows (the runs' eval lines carry it): where the curves pass
    # it, the model has caught up with its reference (docs/training.md).
    ref_line = [j["reference_loss"] for j in map(json.loads, (Path(runs["slm"][0]) / "log.jsonl").read_text().splitlines())
                if j.get("type") == "eval" and j.get("set") == "target" and "reference_loss" in j]
    if ref_line:
        xs = [x for *_, pts in series for x, _ in pts]
        series.append(("reference", "#777", 2, "2 3", [(min(xs), ref_line[-1]), (max(xs), ref_line[-1])]))
    (rep / "target_loss.svg").write_text(svg_lines(series, "Target-domain loss (held-out clean problems)",
                                                    "training tokens", "loss"))
    sel = []
    for r in runs["slm"]:
        pts = [(j["tokens"], j["selected_fraction"]) for j in map(json.loads, (Path(r) / "log.jsonl").read_text()
                                                                    .splitlines()) if j.get("type") == "train"]
        kept = [(j["tokens"], j["kept_score"]) for j in map(json.loads, (Path(r) / "log.jsonl").read_text()
                                                              .splitlines()) if j.get("kept_score") is not None]
        dropped = [(j["tokens"], j["dropped_score"]) for j in map(json.loads, (Path(r) / "log.jsonl").read_text()
                                                                    .splitlines()) if j.get("dropped_score") is not None]
        sel.append((kept, dropped))
    (rep / "excess_loss.svg").write_text(svg_lines(
        [("kept tokens", COLORS["slm"], 2, None, sel[0][0]), ("dropped tokens", "#d1421f", 2, None, sel[0][1])],
        "Mean excess loss of kept and dropped tokens (SLM, first seed)", "training tokens", "excess loss"))

    rows = []
    for i, (c, l) in enumerate(zip(runs["clm"], runs["slm"])):
        rows.append(f"<tr><td>{cfg['seeds'][i]}</td><td>{s['final_target_loss']['clm'][i]:.4f}</td>"
                    f"<td>{s['final_target_loss']['slm'][i]:.4f}</td><td>{s['fewshot_accuracy']['clm'][i]:.1%}</td>"
                    f"<td>{s['fewshot_accuracy']['slm'][i]:.1%}</td><td>"
                    f"{'%.2fx' % s['tokens_ratio'][i] if s['tokens_ratio'][i] else 'not reached'}</td></tr>")
    examples = ""
    preds = evals[runs["slm"][0].name]["fewshot"][0]["predictions"][:3]
    for p in preds:
        examples += (f"<pre>Question: {html.escape(str(p['question'])[:400])}\nAnswer:"
                     f"<b>{html.escape(p['generation'][:300])}</b>\n→ extracted {html.escape(str(p['predicted']))}"
                     f", reference {html.escape(str(p['gold']))} ({'correct' if p['correct'] else 'wrong'})</pre>")
    noise = ""
    stats = out / "data" / "stats.json"
    if stats.exists():
        noise = f"<pre>{html.escape(stats.read_text())}</pre>"
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>librho demo report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:62rem;margin:2rem auto;color:#222;line-height:1.45}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .7rem;text-align:right}}
.verdict{{background:#f4f7fb;border-left:4px solid #1f6fd1;padding:.7rem 1rem}}
pre{{background:#f7f7f7;padding:.5rem;white-space:pre-wrap;font-size:12px}}
iframe{{width:100%;height:34rem;border:1px solid #ddd;border-radius:6px}}</style></head><body>
<h1>Rho-1 on the embedded demo corpus</h1>
<p class="verdict">{verdict(s)}</p>
<p>Setup: a reference model trained on the clean, high-quality set ({cfg['reference']['steps']} steps); the corpus
scored by it; then per seed a CLM baseline and an SLM run (ratio {cfg.get('slm', {}).get('ratio', 0.6)}, selection
over the whole optimizer step) on the same corpus tokens with the same budget of {s['training_tokens']:,} training
tokens. Target domain: held-out clean problems never seen in training. Model: {html.escape(str(cfg['model']))},
sequence length {cfg['seq_len']}. The reference model itself reaches target loss
{s['reference']['target_loss']:.4f}.</p>
<h2>Target-domain loss against training tokens</h2>
<img src="target_loss.svg" alt="target-domain loss">
<h2>Per seed</h2>
<table><tr><th>seed</th><th>CLM final loss</th><th>SLM final loss</th><th>CLM {s['eval_mode'].lower()} acc.</th>
<th>SLM {s['eval_mode'].lower()} acc.</th><th>tokens ratio (CLM budget / SLM tokens to reach CLM final)</th></tr>
{''.join(rows)}
<tr><th>mean</th><td>{s['final_target_loss_mean']['clm']:.4f}</td><td>{s['final_target_loss_mean']['slm']:.4f}</td>
<td>{s['fewshot_accuracy_mean']['clm']:.1%}</td><td>{s['fewshot_accuracy_mean']['slm']:.1%}</td>
<td>{'%.2fx' % mean([r for r in s['tokens_ratio'] if r]) if any(s['tokens_ratio']) else 'not reached'}</td></tr></table>
<h2>SLM variants</h2>
<p>Every run on the same corpus tokens, budget and seeds ({', '.join(str(x) for x in cfg['seeds'])}); a variant changes
only the settings shown (docs/training.md describes each key). Target loss: held-out clean problems, final
evaluation. The effective selected fraction is Kish's effective sample size over valid tokens (the kept fraction
for a hard mask).</p>
{variants_html(s, cfg)}
{categories_html(categories)}
<h2>What SLM selects</h2>
<img src="excess_loss.svg" alt="excess loss of kept and dropped tokens">
<p>The token view below colours a stretch of the corpus by reference loss, by excess loss (the CLM baseline's
loss minus the reference's) and by SLM's keep/drop decision at the run's ratio; hover a token for its numbers.</p>
<iframe src="{html.escape(Path(view).name)}"></iframe>
<h2>{s['eval_mode']} examples (SLM, first seed)</h2>{examples}
<h2>Corpus</h2>{noise}
<p>Raw figures: <a href="summary.json">summary.json</a>; run logs under <code>runs/*/log.jsonl</code>; evaluations
under <code>eval/*.json</code>.</p>
</body></html>
"""
    path = rep / "report.html"
    path.write_text(page)
    return path


def summary_text(out):
    s = json.loads((Path(out) / "report" / "summary.json").read_text())
    return verdict(s).replace("<b>", "").replace("</b>", "")
