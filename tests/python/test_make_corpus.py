#!/usr/bin/env python3
"""Checks scripts/demo/make_corpus.py: the same seed gives the same bytes; evaluation problems never appear in
the training files; every clean solution's arithmetic is right (parsed and recomputed); the noise spans are
exact (removing them leaves clean problems, and only the marked results are wrong); the noise share is what was
asked; --max-operand caps every number a question draws."""
import argparse
import filecmp
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROBLEM = re.compile(r"Question: ([^\n]+)\nAnswer: (.+) The answer is (\d+)\.")
EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
FILES = ["hq.jsonl", "corpus.jsonl", "eval_problems.jsonl", "eval_clean.jsonl", "fewshot_prompt.txt", "stats.json"]


def make(script, out, seed, **sizes):
    args = [sys.executable, str(script), "--out", str(out), "--seed", str(seed)]
    for k, v in sizes.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"make_corpus failed: {r.stderr}")


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="ascii").splitlines()]


def check_problem(text, wrong_ranges=(), where=""):
    """One problem: the format, every equation recomputed (wrong exactly where marked), the final answer equal to
    the last result. Returns the question."""
    m = PROBLEM.fullmatch(text)
    assert m, f"{where}: not a problem in the demo format: {text!r}"
    offset = m.start(2)
    eqs = list(EQUATION.finditer(m.group(2)))
    assert eqs, f"{where}: no equation in {text!r}"
    for e in eqs:
        a, op, b, r = int(e.group(1)), e.group(2), int(e.group(3)), int(e.group(4))
        right = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        marked = any(s < offset + e.end(4) and offset + e.start(4) < t for s, t in wrong_ranges)
        assert (r != right) == marked, f"{where}: {e.group(0)} is {'wrong' if r != right else 'right'} but " \
                                       f"{'is' if marked else 'is not'} marked wrong, in {text!r}"
    assert int(m.group(3)) == int(eqs[-1].group(4)), f"{where}: the final answer is not the last result"
    return m.group(1)


def clean_parts(doc):
    """The document without its noise spans (wrong results stay), split into problems, with the wrong results'
    ranges in the cleaned text."""
    text, spans = doc["text"], doc["noise"]
    kept, wrong, pos = "", [], 0
    for s, t, kind in spans:
        assert pos <= s < t <= len(text), f"bad or overlapping span {[s, t, kind]} in {text!r}"
        kept += text[pos:s]
        if kind == "wrong_arithmetic":
            wrong.append((len(kept), len(kept) + t - s))
            kept += text[s:t]
        pos = t
    kept += text[pos:]
    parts, start = [], 0
    for piece in kept.split("\n\n") if kept else []:
        parts.append((piece, [(s - start, t - start) for s, t in wrong if start <= s < start + len(piece)]))
        start += len(piece) + 2
    return parts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True, type=Path)
    args = ap.parse_args()
    small = dict(hq_chars=40_000, corpus_chars=150_000, eval_problems=60, eval_clean_chars=8_000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make(args.script, tmp / "a", 7, **small)
        make(args.script, tmp / "b", 7, **small)
        make(args.script, tmp / "c", 8, **small)
        for f in FILES:
            assert filecmp.cmp(tmp / "a" / f, tmp / "b" / f, shallow=False), f"{f} differs between equal seeds"
        assert not filecmp.cmp(tmp / "a" / "corpus.jsonl", tmp / "c" / "corpus.jsonl", shallow=False)
        print("determinism: same seed, same bytes; another seed, another corpus")

        d = tmp / "a"
        hq = read_jsonl(d / "hq.jsonl")
        corpus = read_jsonl(d / "corpus.jsonl")
        evals = read_jsonl(d / "eval_problems.jsonl")
        eval_clean = read_jsonl(d / "eval_clean.jsonl")
        shots = (d / "fewshot_prompt.txt").read_text(encoding="ascii").strip().split("\n\n")
        assert sum(len(r["text"]) for r in hq) >= small["hq_chars"] and len(evals) == small["eval_problems"]

        hq_questions = [check_problem(r["text"], where=f"hq.jsonl:{i + 1}") for i, r in enumerate(hq)]
        for i, r in enumerate(evals):
            q = check_problem(f"Question: {r['question']}\nAnswer: {r['answer']}", where=f"eval_problems:{i + 1}")
            assert q == r["question"] and r["answer"].endswith(f"The answer is {r['final']}.")
        clean_questions = [check_problem(p, where="eval_clean") for r in eval_clean for p in r["text"].split("\n\n")]
        shot_questions = [check_problem(s, where="fewshot_prompt.txt") for s in shots]
        assert len(shots) == 4
        corpus_questions, noise, total, kinds, inserted = [], 0, 0, set(), 0
        for i, doc in enumerate(corpus):
            parts = clean_parts(doc)
            for piece, wrong in parts:
                corpus_questions.append(check_problem(piece, wrong, where=f"corpus.jsonl:{i + 1}"))
            noise += sum(t - s for s, t, _ in doc["noise"])
            total += len(doc["text"])
            kinds.update(k for _, _, k in doc["noise"])
            inserted += bool(parts) and any(k != "wrong_arithmetic" for _, _, k in doc["noise"])
        print(f"arithmetic: {len(hq_questions)} hq, {len(evals)} eval, {len(clean_questions)} eval_clean and "
              f"{len(corpus_questions)} corpus problems recomputed; noise spans are exact")
        assert kinds == {"boilerplate", "markup", "unrelated", "random", "wrong_arithmetic"}, kinds
        assert inserted > 0, "no clean document has noise inserted"

        held_out = set(r["question"] for r in evals)
        everything = [r["text"] for r in hq + corpus]
        for q in held_out | set(shot_questions):
            assert not any(q in t for t in everything), f"held-out question in training text: {q}"
        assert not held_out & set(clean_questions) and not set(hq_questions) & set(corpus_questions)
        assert len(set(hq_questions)) == len(hq_questions) and len(set(corpus_questions)) == len(corpus_questions)
        print("disjoint: eval problems, few-shot examples and eval_clean never appear in hq or corpus")

        stats = json.loads((d / "stats.json").read_text())
        assert stats["corpus"]["noise_chars"] == noise and stats["corpus"]["chars"] == total
        for asked in (0.1, 0.3, 0.6):
            out = tmp / f"f{asked}"
            make(args.script, out, 3, **dict(small, corpus_chars=100_000, noise_fraction=asked))
            docs = read_jsonl(out / "corpus.jsonl")
            got = sum(t - s for d in docs for s, t, _ in d["noise"]) / sum(len(d["text"]) for d in docs)
            print(f"noise fraction: asked {asked}, got {got:.4f}")
            assert abs(got - asked) < 0.02, (asked, got)

        # --max-operand 9: the numbers a question draws are single digits; only a total derived from them (the
        # money someone "has", the items someone "has" to share) may be larger. The arithmetic stays right.
        make(args.script, tmp / "small", 7, **dict(small, max_operand=9))
        drawn, largest = 0, 0
        for i, r in enumerate(read_jsonl(tmp / "small" / "hq.jsonl")):
            q = check_problem(r["text"], where=f"small/hq.jsonl:{i + 1}")
            for m in re.finditer(r"(has )?(\d+)", q):
                if not m.group(1):
                    drawn += 1
                    largest = max(largest, int(m.group(2)))
        print(f"max operand 9: {drawn} drawn numbers in questions, largest {largest}")
        assert drawn > 0 and largest <= 9, largest
        uncapped = max(int(n) for r in hq for n in re.findall(r"(?<!has )\b(\d+)", r["text"].split("\n")[0]))
        assert uncapped > 9, "the default ranges should go past 9"
    print("ok")


if __name__ == "__main__":
    main()
