#!/usr/bin/env python3
"""The math benchmark suite's grading on the real test sets: every benchmark's gold solution, given to
`rho_eval --grade` as a completion, must be judged correct for at least 99% of the items; the exceptions are
printed with their reference answer and what was read from the gold solution.

Gold completions, per benchmark: GSM8K's worked answer ("... #### 72"); MATH's solution (its last \\boxed{});
MATH-500 (minerva_math) the Minerva sentence "Final Answer: The final answer is $ANSWER$. I hope it is correct."
with the data's separate `answer` field, so the judge must find it equal to the \\boxed{} answer of the solution;
SVAMP's equation followed by "= Answer"; ASDiv's formula and "The answer is ANSWER." (its answer without the
parenthesised unit); MAWPS and GSM-Hard "The answer is TARGET."; TabMWP (when eval/tabmwp/test.jsonl is
given) "The answer is ANSWER."; the multiple-choice sets "The answer is (LETTER)." Also: a `--grade` file with bad
lines is refused with the file and line named.

Needs the suite's data ($RHO_SHARED_DATA/eval, default ../shared/data/eval): exits 77 (skipped) without it.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def gold_completions(name, items):
    out = []
    for pos, it in enumerate(items):
        idx = it.get("idx", pos)
        if name == "gsm8k":
            c = it["answer"]
        elif name == "math":
            c = it["solution"]
        elif name == "minerva_math":
            c = f"Final Answer: The final answer is ${it['answer']}$. I hope it is correct."
        elif name == "svamp":
            c = f"{it['Equation']} = {it['Answer']}"
        elif name == "asdiv":  # its formulas are no solutions ("94/8=11 r6"); the answer without its unit
            c = f"{it['formula']}. The answer is {re.sub(r'[(].*?[)]', '', it['answer']).strip()}."
        elif name in ("mawps", "gsm_hard"):
            c = f"The answer is {it['target']}."
        elif name == "tabmwp":  # numbers ("1,000", "3/4", "$2.50") and words ("shortage", "Yes") as given
            c = f"The answer is {it['answer']}."
        elif name == "mathqa":
            c = f"The answer is ({it['correct'].upper()})."
        elif name == "mmlu_stem":
            c = f"The answer is ({'ABCD'[it['answer']]})."
        elif name == "sat_math":
            c = f"The answer is ({it['Answer']})."
        else:
            raise ValueError(name)
        out.append({"benchmark": name, "idx": idx, "completion": c})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    rho_eval = Path(ap.parse_args().bin) / "rho_eval"
    data = Path(os.environ.get("RHO_SHARED_DATA", ROOT / ".." / "shared" / "data")).resolve()
    ev = data / "eval"
    if not (ev / "prompts").is_dir():
        print(f"SKIPPED: the suite's data is not at {ev} (set RHO_SHARED_DATA)")
        return 77
    files = {"gsm8k": data / "gsm8k" / "test.jsonl"}
    for name, sub in [("math", "math"), ("minerva_math", "math_oai"), ("svamp", "svamp"), ("asdiv", "asdiv"),
                      ("mawps", "mawps"), ("gsm_hard", "gsm_hard"), ("mathqa", "mathqa"), ("mmlu_stem", "mmlu_stem"),
                      ("sat_math", "sat_math")]:
        files[name] = ev / sub / "test.jsonl"
    if (ev / "tabmwp" / "test.jsonl").exists():  # TabMWP where its data is given (not in every copy of the suite)
        files["tabmwp"] = ev / "tabmwp" / "test.jsonl"
    else:
        print(f"note: no {ev / 'tabmwp' / 'test.jsonl'}: TabMWP is not graded")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        lines = []
        for name, f in files.items():
            lines += gold_completions(name, load(f))
        (t / "gold.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        r = subprocess.run([rho_eval, "--grade", t / "gold.jsonl", "--bench", ",".join(files), "--eval-dir", ev,
                            "--bench-file", f"gsm8k={files['gsm8k']}", "--json", t / "report.json",
                            "--records", t / "records.jsonl", "--markdown", t / "table.md"],
                           capture_output=True, text=True)
        print(r.stdout)
        if r.returncode != 0:
            print(r.stderr)
            return 1
        report = json.loads((t / "report.json").read_text())
        records = load(t / "records.jsonl")
        for b in report["benchmarks"]:
            wrong = [x for x in records if x["benchmark"] == b["name"] and not x["correct"]]
            good = b["accuracy"] >= 0.99 and b["items"] == len(load(files[b["name"]]))
            print(f"{'ok  ' if good else 'FAIL'}  {b['name']}: {b['correct']}/{b['items']} gold solutions judged "
                  f"correct ({100 * b['accuracy']:.2f}%)")
            for x in wrong[:8]:
                print(f"        idx {x['idx']}: gold {x['gold']!r}, read {x['predicted']!r}")
            ok &= good
        print((t / "table.md").read_text())

        # Bad --grade input: the file (and line) named, a non-zero exit
        for what, content, named in [
                ("a bad --grade line", json.dumps({"benchmark": "gsm8k", "idx": 0, "completion": "1"}) + "\n{oops\n",
                 "bad.jsonl:2"),
                ("an unknown idx", json.dumps({"benchmark": "gsm8k", "idx": 99999, "completion": "1"}) + "\n",
                 "idx 99999")]:
            (t / "bad.jsonl").write_text(content)
            r = subprocess.run([rho_eval, "--grade", t / "bad.jsonl", "--bench", "gsm8k", "--eval-dir", ev,
                                "--bench-file", f"gsm8k={files['gsm8k']}"], capture_output=True, text=True)
            good = r.returncode != 0 and named in r.stderr
            print(f"{'ok  ' if good else 'FAIL'}  {what} is named: {r.stderr.strip()[:160]}")
            ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
