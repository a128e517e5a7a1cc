#!/usr/bin/env python3
"""The shortened demo pipeline (configs/demo/ci.yaml) end to end, then its report rendered by headless Chromium:
every stage's output exists, the summary has every figure, the page shows the verdict, the plots and the token
view; rerunning into the folder with another config stops. The Chromium part is skipped, with a message, when
chromium is absent. Then continual pretraining (configs/demo/continual-ci.yaml, the GPU kit's paper setting at CI
sizes): the base model trains on its own part of the corpus, and the reference, CLM and SLM runs start from it."""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import ROOT, chromium_output, run_pipeline  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        r = run_pipeline(ROOT / "configs/demo/ci.yaml", args.bin, out)
        print(r.stdout[-3000:], r.stderr[-3000:])
        s = json.loads((out / "report/summary.json").read_text())
        ok = all(k in s for k in ("final_target_loss_mean", "fewshot_accuracy_mean", "tokens_ratio", "reference"))
        ok &= all(x > 0 for x in s["final_target_loss"]["clm"] + s["final_target_loss"]["slm"])
        # The variants of ci.yaml ran on the same budget; token categories of CLM and SLM add up to 1.
        ok &= set(s["variants"]) == {"clm", "slm", "refs_min", "stochastic"}
        ok &= all(v["final_target_loss_mean"] > 0 for v in s["variants"].values())
        ok &= abs(s["variants"]["stochastic"]["selected_fraction_mean"] - 0.6) < 0.02
        ok &= all(abs(sum(c.values()) - 1) < 1e-9 for c in s["token_categories"].values())
        ok &= set(s["token_categories"]) == {"clm", "slm"}
        print("variants:", json.dumps(s["variants"]), "categories:", json.dumps(s["token_categories"]))
        # Another config into the same folder stops before any stage, naming what differs; nothing is touched.
        other = Path(tmp) / "other.yaml"
        other.write_text(f"base: {ROOT / 'configs/demo/ci.yaml'}\nseq_len: 64\n")
        before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
        r = run_pipeline(other, args.bin, out, expect=None)
        mixed = r.returncode != 0 and "holds the work of another config (seq_len differ" in r.stderr
        mixed &= sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
        print("another config into the same folder:", r.stderr.strip()[-300:])
        ok &= mixed
        for f in ("report.html", "token_view.html", "runs.json"):
            ok &= (out / "report" / f).stat().st_size > 300
        # rho_report's figures agree with the demo's own: the same final losses (mean of the seeds).
        runs = {g["label"]: g for g in json.loads((out / "report/runs.json").read_text())["groups"]}
        ok &= all(abs(runs[k]["final_loss"] - s["final_target_loss_mean"][k]) < 1e-9 for k in ("clm", "slm"))
        chromium = shutil.which("chromium")
        if not chromium:
            print("SKIPPED rendering check: chromium is not installed")
        else:
            page = f"file://{out / 'report/report.html'}"
            dom = chromium_output(chromium, "--dump-dom", page)
            for needle in ("Rho-1 on the embedded demo corpus", "Eval loss on 'target'", "Tokens to reach",
                           "Selected fraction", "<svg", "token view", "CLM final loss", "SLM variants",
                           "Token categories", "refs_min"):
                if needle not in dom:
                    print(f"rendered page lacks {needle!r}")
                    ok = False
            shot = Path(tmp) / "report.png"
            chromium_output(chromium, "--window-size=1100,1400", f"--screenshot={shot}", page)
            ok &= shot.exists() and shot.stat().st_size > 20000
            print(f"chromium: DOM {len(dom)} chars, screenshot {shot.stat().st_size if shot.exists() else 0} bytes")
        ok &= check_continual(Path(tmp), args.bin)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def first_and_last_eval(run_dir):
    evals = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    evals = [e["loss"] for e in evals if e.get("type") == "eval" and e.get("set") == "target"]
    return evals[0], evals[-1]


def check_continual(tmp, tools):
    out = tmp / "continual"
    r = run_pipeline(ROOT / "configs/demo/continual-ci.yaml", tools, out)
    print(r.stdout[-1500:], r.stderr[-1500:])
    s = json.loads((out / "report/summary.json").read_text())
    data = out / "data"
    # The generated corpus split in two, in order and whole: the base's part and the part the runs continue on.
    corpus = (data / "corpus.jsonl").read_text().splitlines()
    base_part = (data / "base_corpus.jsonl").read_text().splitlines()
    continual = (data / "continual.jsonl").read_text().splitlines()
    ok = base_part + continual == corpus and len(base_part) == round(len(corpus) * 0.5)
    # Every run starts where the base ended: its first evaluation (step 0) is the base's last, to the digit; the
    # base itself starts from scratch, higher.
    base_first, base_last = first_and_last_eval(out / "runs/base")
    starts = {name: first_and_last_eval(out / "runs" / name)[0] for name in ("reference", "clm-seed1", "slm-seed1")}
    print(f"continual: base {base_first:.4f} -> {base_last:.4f}; runs start at {starts}")
    ok &= base_first > base_last + 0.5 and all(abs(v - base_last) < 1e-6 for v in starts.values())
    ok &= abs(s["base"]["target_loss"] - json.loads((out / "eval/base.json").read_text())["heldout"][0]["loss"]) < 1e-9
    ok &= s["base"]["training_tokens"] == 30 * 4 * 128 and s["training_tokens"] == 20 * 4 * 128
    ok &= "continued from a base model pretrained on 15,360 tokens" in (out / "report/report.html").read_text()
    # A share that leaves a part empty is refused, naming the key.
    bad = tmp / "bad_share.yaml"
    bad.write_text(f"base: {ROOT / 'configs/demo/continual-ci.yaml'}\nbase_model: {{steps: 2, batch_size: 2, "
                   "lr: 0.001, corpus_share: 1.5}\n")
    r = run_pipeline(bad, tools, tmp / "bad_share", expect=None)
    ok &= r.returncode != 0 and "base_model.corpus_share must be in (0, 1), not 1.5" in r.stderr
    print("continual:", "ok" if ok else "FAILED")
    return ok


if __name__ == "__main__":
    sys.exit(main())
