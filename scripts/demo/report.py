"""The demo report: rho_report's page comparing the CLM and SLM runs (eval loss against training tokens for every
seed, the tokens SLM needs to reach the baseline's final loss, selection statistics, the token view), opened by
the demo's own summary: the verdict, few-shot accuracy per seed, the SLM variants side by side, token categories
and noise statistics. Writes report/report.html, report/summary.json (the demo's figures) and report/runs.json
(rho_report's). States what happened, whichever way."""
import html
import json
import math
import subprocess
from pathlib import Path

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
    if "base" in evals:  # continual pretraining: the model every run started from ("before")
        s["base"] = {"target_loss": evals["base"]["heldout"][0]["loss"],
                     "fewshot_accuracy": evals["base"]["fewshot"][0]["accuracy"],
                     "training_tokens": eval_curve(out / "runs" / "base")[-1][0]}
    first = evals[runs["clm"][0].name]["fewshot"][0]
    s["eval_items"] = first["items"]
    s["eval_mode"] = "Few-shot" if cfg.get("eval", {}).get("fewshot") else "Zero-shot"
    s["slm_wins_loss"] = s["final_target_loss_mean"]["slm"] < s["final_target_loss_mean"]["clm"]
    s["slm_wins_accuracy"] = s["fewshot_accuracy_mean"]["slm"] > s["fewshot_accuracy_mean"]["clm"]
    s["slm_reaches_baseline_earlier"] = all(r is not None and r < budget for r in reach)
    s["variants"] = variants_summary(runs, evals, curves["clm"])
    return s


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
    if "base" in s:
        parts.append(f"Both continued from a base model pretrained on {s['base']['training_tokens']:,} tokens "
                     f"(before: target loss {s['base']['target_loss']:.4f}, accuracy "
                     f"{s['base']['fewshot_accuracy']:.1%}).")
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


def write(out, cfg, runs, evals, view, categories=None, tools=None):
    """The summary (summary.json) and the page: rho_report (in folder `tools`) over the CLM and SLM runs, with the
    demo's own summary as its introduction."""
    out = Path(out)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    s = analyse(out, cfg, runs, evals)
    s["token_categories"] = {k: {n: c["categories"][n]["share"] for n in c["categories"]}
                             for k, c in (categories or {}).items()}
    (rep / "summary.json").write_text(json.dumps(s, indent=2) + "\n")

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
    continual = ""
    if "base" in s:
        continual = (f"Continual pretraining: a base model was first pretrained on {s['base']['training_tokens']:,} "
                     "tokens of a separate part of the corpus; the reference model is that base fine-tuned on the "
                     "high-quality set, and the CLM and SLM runs continue from it. ")
    intro = f"""<p class="verdict">{verdict(s)}</p>
<p>{continual}Setup: a reference model trained on the clean, high-quality set ({cfg['reference']['steps']} steps); the corpus
scored by it; then per seed a CLM baseline and an SLM run (ratio {cfg.get('slm', {}).get('ratio', 0.6)}, selection
over the whole optimizer step) on the same corpus tokens with the same budget of {s['training_tokens']:,} training
tokens. Target domain: held-out clean problems never seen in training (eval set <code>target</code>). Model:
{html.escape(str(cfg['model']))}, sequence length {cfg['seq_len']}. The reference model itself reaches target loss
{s['reference']['target_loss']:.4f}. The SLM variants, token categories and examples follow the runs' curves.</p>
<h2>Per seed</h2>
<table><tr><th>seed</th><th>CLM final loss</th><th>SLM final loss</th><th>CLM {s['eval_mode'].lower()} acc.</th>
<th>SLM {s['eval_mode'].lower()} acc.</th><th>tokens ratio (CLM budget / SLM tokens to reach CLM final)</th></tr>
{''.join(rows)}
<tr><th>mean</th><td>{s['final_target_loss_mean']['clm']:.4f}</td><td>{s['final_target_loss_mean']['slm']:.4f}</td>
<td>{s['fewshot_accuracy_mean']['clm']:.1%}</td><td>{s['fewshot_accuracy_mean']['slm']:.1%}</td>
<td>{'%.2fx' % mean([r for r in s['tokens_ratio'] if r]) if any(s['tokens_ratio']) else 'not reached'}</td></tr></table>
"""
    outro = f"""<h2>SLM variants</h2>
<p>Every run on the same corpus tokens, budget and seeds ({', '.join(str(x) for x in cfg['seeds'])}); a variant changes
only the settings shown (docs/training.md describes each key). Target loss: held-out clean problems, final
evaluation. The effective selected fraction is Kish's effective sample size over valid tokens (the kept fraction
for a hard mask).</p>
{variants_html(s, cfg)}
{categories_html(categories)}
<h2>{s['eval_mode']} examples (SLM, first seed)</h2>{examples}
<h2>Corpus</h2>{noise}
<p>Raw figures: <a href="summary.json">summary.json</a> (the demo's), <a href="runs.json">runs.json</a>
(rho_report's); run logs under <code>runs/*/log.jsonl</code>; evaluations under <code>eval/*.json</code>.</p>
"""
    (rep / "intro.html").write_text(intro)
    (rep / "outro.html").write_text(outro)
    path = rep / "report.html"
    tools = Path(tools) if tools else Path(__file__).resolve().parents[2] / "build" / "apps"
    r = subprocess.run([str(tools / "rho_report"), *[f"{k}={r}" for k in ("clm", "slm") for r in runs[k]],
                        "--set", "target", "--title", "Rho-1 on the embedded demo corpus", "--intro",
                        str(rep / "intro.html"), "--outro", str(rep / "outro.html"), "--token-view", str(view), "--out", str(path), "--json",
                        str(rep / "runs.json")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"rho_report failed ({r.returncode}):\n{r.stderr}")
    return path


def summary_text(out):
    s = json.loads((Path(out) / "report" / "summary.json").read_text())
    return verdict(s).replace("<b>", "").replace("</b>", "")
