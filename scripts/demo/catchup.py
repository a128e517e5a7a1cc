#!/usr/bin/env python3
"""The catch-up experiment's table (configs/demo/catchup*.yaml; docs/demo.md): per run kind, averaged over seeds,
the target-set loss at each evaluation (from the runs' log.jsonl), when the model caught up with the reference (its
target loss at or below the reference's), when a handoff was made, and the final few-shot accuracy (eval/*.json).

    python3 scripts/demo/catchup.py out/demo-catchup [--every 50]
"""
import argparse
import json
import statistics
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--every", type=int, default=50, help="show the evaluations of every N steps")
    a = ap.parse_args()
    out = Path(a.out)
    kinds = {}
    for run in sorted((out / "runs").iterdir()):
        if "-seed" not in run.name:
            continue
        kind, seed = run.name.rsplit("-seed", 1)
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        evals = {e["step"]: e for e in log if e["type"] == "eval" and e["set"] == "target"}
        handoff = [e["step"] for e in log if e["type"] == "handoff"]
        caught = [s for s, e in sorted(evals.items()) if e.get("gap") is not None and e["gap"] <= 0]
        acc = json.loads((out / "eval" / f"{run.name}.json").read_text())["fewshot"][0]["accuracy"]
        kinds.setdefault(kind, []).append({"evals": evals, "handoff": handoff[0] if handoff else None,
                                           "caught": caught[0] if caught else None, "accuracy": acc,
                                           "tokens": {s: e["tokens"] for s, e in evals.items()}})
    first = next(iter(kinds.values()))[0]
    ref_loss = next(e["reference_loss"] for e in first["evals"].values() if "reference_loss" in e)
    steps = sorted(s for s in first["evals"] if s % a.every == 0 or s == max(first["evals"]))
    order = ["clm", "slm"] + sorted(k for k in kinds if k not in ("clm", "slm"))
    head = "| run | " + " | ".join(f"{first['tokens'][s] / 1e3:.0f}k tok" for s in steps) + \
           " | caught up (step) | handoff (step) | accuracy |"
    print(f"reference target loss: {ref_loss:.4f}; target loss by tokens seen, mean of {len(first and kinds['clm'])} seeds\n")
    print(head)
    print("| --- " * (len(steps) + 4) + "|")
    for k in order:
        if k not in kinds:
            continue
        rs = kinds[k]
        cells = [f"{statistics.mean(r['evals'][s]['loss'] for r in rs):.4f}" for s in steps]
        caught = [r["caught"] for r in rs]
        hand = [r["handoff"] for r in rs]
        accs = [r["accuracy"] for r in rs]
        fmt = lambda xs: ", ".join("-" if x is None else str(x) for x in xs)
        print(f"| {k} | " + " | ".join(cells) + f" | {fmt(caught)} | {fmt(hand)} | "
              f"{statistics.mean(accs):.3f} ({', '.join(f'{x:.3f}' for x in accs)}) |")


if __name__ == "__main__":
    main()
