"""rho_report: one self-contained page for any runs. Three small runs (two CLM seeds under one label, one SLM run
with score histograms) and a token view from loss datasets; the page must hold no external reference (no scripts,
images or styles from elsewhere), its figures (runs.json) must equal what log.jsonl gives when computed here
independently (each group's mean final loss, the tokens to reach the first group's final loss by linear
interpolation, the ratio), every axis tick must sit at a round number (k x 1, 2 or 5 x 10^n, evenly spaced), bad
input must be named by file and line, and headless Chromium must render it.

  test_report.py --bin BUILD/apps [--screenshot FILE]
"""
import argparse
import json
import math
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_helpers import chromium_output, run, tiny_tokens_and_model  # noqa: E402

failures = []


def check(cond, msg):
    print(("PASS " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def evals(run_dir, name="held"):
    return [(j["tokens"], j["loss"]) for j in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
            if j["type"] == "eval" and j["set"] == name]


def mean_curve(curves):
    n = min(len(c) for c in curves)
    return [(curves[0][i][0], sum(c[i][1] for c in curves) / len(curves)) for i in range(n)]


def reach(curve, target):
    if curve[0][1] <= target:
        return curve[0][0]
    for (t0, l0), (t1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            return t1 if l0 == l1 else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def round_ticks(values):
    """Evenly spaced multiples of a step that is 1, 2 or 5 times a power of ten."""
    if len(values) < 2:
        return False
    step = values[1] - values[0]
    mant = step / 10 ** math.floor(math.log10(step) + 1e-9)
    even = all(abs((b - a) - step) <= 1e-6 * step for a, b in zip(values, values[1:]))
    return even and any(abs(mant - m) < 1e-6 for m in (1, 2, 5)) and \
        all(abs(v / step - round(v / step)) < 1e-6 for v in values)


def parse_tick(text):
    scale = {"k": 1e3, "M": 1e6, "B": 1e9}.get(text[-1:], 1)
    return float(text[:-1] if scale != 1 else text) * scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--screenshot", help="also save Chromium's screenshot of the page here")
    args = ap.parse_args()
    b = Path(args.bin)
    with tempfile.TemporaryDirectory(prefix="rho_report_") as tmp:
        t = Path(tmp)
        tiny_tokens_and_model(b, t)
        run(b / "rho_score", "--model", t / "ref", "--data", t / "tok", "--out", t / "losses", "--seq-len", "32",
            "--device", "cpu")

        def train(name, stage, seed):
            (t / f"{name}.yaml").write_text(f"""run: {{out_dir: {t / name}, seed: {seed}, device: cpu}}
model: {{config: {t / 'm.yaml'}}}
data: {{train: {t / 'tok'}, seq_len: 32, batch_size: 4, eval: {{held: {t / 'tok'}}}, eval_every: 4, eval_batches: 2}}
optim: {{lr: 0.003, min_lr: 0.0003, warmup_steps: 3, max_steps: 24}}
train: {{stage: {stage}, log_every: 2, histogram_every: 6}}
slm: {{ratio: 0.6, reference_model: [{t / 'ref'}]}}
""")
            run(b / "rho_pretrain", t / f"{name}.yaml")
            return t / name

        clm1, clm2, slm = train("clm1", "clm", 1), train("clm2", "clm", 2), train("slm", "slm", 1)
        page, summary = t / "out" / "report.html", t / "out" / "runs.json"
        run(b / "rho_report", f"clm={clm1}", f"clm={clm2}", slm, "--out", page, "--json", summary,
            "--view-data", t / "tok", "--view-losses", t / "losses", "--title", "Report test")
        html = page.read_text()

        external = re.findall(r'(?:src|href)\s*=\s*"(?!#|data:)[^"]*"|<script[^>]*\bsrc\b|<link\b|@import|url\((?!#)',
                              html)
        check(not external, f"self-contained: no external reference ({external[:3]})")
        svgs = html.count("<svg")
        check(svgs >= 4 and "srcdoc=" in html,
              f"{svgs} inline SVG charts (eval loss, selected fraction, scores, histogram) and the token view inline")

        got = {g["label"]: g for g in json.loads(summary.read_text())["groups"]}
        clm_curve = mean_curve([evals(clm1), evals(clm2)])
        slm_curve = evals(slm)
        target, budget = clm_curve[-1][1], clm_curve[-1][0]
        want_reach = reach(slm_curve, target)
        ok = abs(got["clm"]["final_loss"] - target) < 1e-12 and got["clm"]["runs"] == 2
        ok &= abs(got["slm"]["final_loss"] - slm_curve[-1][1]) < 1e-12 and got["slm"]["final_tokens"] == budget
        if want_reach is None:
            ok &= got["slm"]["tokens_to_reach_first"] is None and got["slm"]["ratio"] is None
        else:
            ok &= abs(got["slm"]["tokens_to_reach_first"] - want_reach) < 1e-6 * budget
            ok &= abs(got["slm"]["ratio"] - budget / want_reach) < 1e-9
        check(ok, f"runs.json equals log.jsonl computed here: clm mean final {target:.4f}, slm final "
              f"{slm_curve[-1][1]:.4f}, slm reaches it at {want_reach} of {budget} tokens")
        for name, g in got.items():
            shown = f"{g['final_loss']:.4f}"
            check(shown in html, f"the page shows {name}'s final loss {shown}")

        # Ticks: every chart's y labels (text-anchor end) and x labels (the row below the frame).
        bad = []
        for svg in re.findall(r"<svg.*?</svg>", html, flags=re.S):
            ys = [parse_tick(x) for x in re.findall(r'text-anchor="end">([^<]+)</text>', svg)]
            xs = [parse_tick(x) for x in re.findall(r'text-anchor="middle">([-0-9.]+[kMB]?)</text>', svg)]
            if not (round_ticks(ys) and round_ticks(xs)):
                bad.append((ys, xs))
        check(not bad, f"axis ticks at round numbers in all {svgs} charts {bad[:1]}")

        hist = [j for j in map(json.loads, (slm / "log.jsonl").read_text().splitlines()) if j["type"] == "histogram"]
        check(f"Scores at step {hist[-1]['step']}" in html, f"the last score histograms (step {hist[-1]['step']}) shown")

        # Bad input: named by file (and line), nothing written.
        r = run(b / "rho_report", t / "nothing", "--out", t / "bad.html", expect=None)
        check(r.returncode != 0 and str(t / "nothing" / "log.jsonl") in r.stderr and not (t / "bad.html").exists(),
              f"a folder without log.jsonl: {r.stderr.strip()[-160:]}")
        broken = t / "broken"
        shutil.copytree(slm, broken)
        lines = (broken / "log.jsonl").read_text().splitlines()
        lines[3] = '{"type": "eval", "step": 4, "set": "held"}'
        (broken / "log.jsonl").write_text("\n".join(lines) + "\n")
        r = run(b / "rho_report", broken, "--out", t / "bad.html", expect=None)
        check(r.returncode != 0 and f"{broken / 'log.jsonl'}:4" in r.stderr and "'tokens'" in r.stderr,
              f"an eval line without tokens, named by file:line: {r.stderr.strip()[-160:]}")

        chromium = shutil.which("chromium")
        if not chromium:
            print("SKIP the rendering check: chromium is not installed")
        else:
            dom = chromium_output(chromium, "--dump-dom", f"file://{page}")
            needles = ["Report test", "Eval loss on 'held'", "Tokens to reach", "Selected fraction", "Scores at step"]
            check(all(n in dom for n in needles), f"Chromium renders it: {len(dom)} characters of DOM with {needles}")
            shot = Path(args.screenshot) if args.screenshot else t / "shot.png"
            chromium_output(chromium, "--window-size=1100,2400", f"--screenshot={shot}", f"file://{page}")
            check(shot.exists() and shot.stat().st_size > 20000, f"a screenshot ({shot.stat().st_size} bytes)")
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")
    print("all rho_report checks passed")


if __name__ == "__main__":
    main()
