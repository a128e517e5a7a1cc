#!/usr/bin/env python3
"""rho_eval on a model from a rho_pretrain run: its held-out window defaults to the run's training seq_len (the
trainer's evaluation of the same data uses it), for the run folder, its hf/ export and a checkpoint; --seq-len
overrides it; a bare Hugging Face folder gets min(2048, max_position_embeddings). --fewshot gives the same
predictions with --cuda-graphs (on the CPU: the fixed-shape steps, run eagerly) as without. --bench split across
two ranks (RANK / WORLD_SIZE, as a launcher sets them) gives the records and figures of one process; rank 0 does
not merge a part of a run with other settings, and ends naming the part it waited for; other tasks are refused
under a launcher."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import run, write_model_yaml, write_word_corpus  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    b = Path(ap.parse_args().bin)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_word_corpus(t / "c.jsonl", 300)
        run(b / "rho_tokenize", t / "c.jsonl", "--out", t / "tok", "--train-tokenizer", "--vocab-size", "320")
        write_model_yaml(t / "m.yaml", 320)
        (t / "run.yaml").write_text(f"""run: {{out_dir: {t / 'run'}, seed: 5, device: cpu}}
model: {{config: {t / 'm.yaml'}}}
data: {{train: {t / 'tok'}, seq_len: 24, batch_size: 4}}
optim: {{lr: 0.003, min_lr: 0.0003, warmup_steps: 1, max_steps: 4}}
train: {{log_every: 1, checkpoint_every: 4}}
""")
        run(b / "rho_pretrain", t / "run.yaml")
        ckpt = sorted((t / "run" / "checkpoints").iterdir())[-1]

        def seq_len(model, *extra):
            out = t / "eval.json"
            run(b / "rho_eval", "--model", model, "--data", f"c={t / 'tok'}", "--json", out, "--quiet", *extra)
            return json.loads(out.read_text())["heldout"][0]["seq_len"]

        for model in (t / "run", t / "run" / "hf", ckpt):
            got = seq_len(model)
            print(f"rho_eval --model {model.relative_to(t)}: held-out seq_len {got} (the run trained at 24)")
            ok &= got == 24
        got = seq_len(t / "run" / "hf", "--seq-len", "16")
        print(f"with --seq-len 16: {got}")
        ok &= got == 16
        items = [{"question": " ".join(["alpha", "beta", "gamma"][: 1 + i % 3] * (1 + i)), "answer": str(i)}
                 for i in range(7)]
        (t / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))

        def fewshot(*extra):
            out = t / "fewshot.json"
            run(b / "rho_eval", "--model", t / "run" / "hf", "--data", f"c={t / 'tok'}", "--fewshot", t / "items.jsonl",
                "--max-new-tokens", "12", "--generate-batch", "3", "--json", out, "--quiet", *extra)
            predictions = json.loads(out.read_text())["fewshot"][0]["predictions"]
            return [(p["generation"], p["new_tokens"], p["stop_reason"]) for p in predictions]
        eager, fixed = fewshot(), fewshot("--cuda-graphs")
        print(f"--fewshot, 7 items in rows of 3: {sum(n for _, n, _ in eager)} new tokens; with --cuda-graphs the "
              f"same: {eager == fixed}")
        ok &= eager == fixed and len(eager) == 7
        ok &= split_suite(b, t)
        run(b / "rho_model", "init", t / "m.yaml", "--out", t / "bare")
        got = seq_len(t / "bare")
        print(f"a bare Hugging Face folder (max_position_embeddings 64): {got}")
        ok &= got == 64
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def split_suite(b, t):
    """rho_eval --bench under two ranks against one process: the same records, the same figures (seconds aside)."""
    (t / "suite" / "prompts" / "cot").mkdir(parents=True)
    (t / "suite" / "prompts" / "cot" / "gsm8k.md").write_text("Question: alpha beta?\nAnswer: 2. The answer is 2.\n")
    (t / "suite" / "gsm8k").mkdir()
    (t / "suite" / "gsm8k" / "test.jsonl").write_text("".join(
        json.dumps({"question": " ".join(["alpha", "beta", "gamma"][: 1 + i % 3] * (1 + i)), "answer": f"x\n#### {i}"})
        + "\n" for i in range(9)))
    common = [b / "rho_eval", "--model", t / "run" / "hf", "--tokenizer", t / "tok", "--bench", "gsm8k", "--eval-dir",
              t / "suite", "--max-new-tokens", "10", "--generate-batch", "2", "--device", "cpu", "--quiet"]
    run(*common, "--records", t / "one.jsonl", "--json", t / "one.json", "--markdown", t / "one.md")

    def ranks(out, *extra, which=(0, 1)):
        procs = [subprocess.Popen([str(x) for x in [*common, *extra, "--records", out.with_suffix(".jsonl"), "--json",
                                                       out.with_suffix(".json"), "--markdown", out.with_suffix(".md")]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"}) for r in which]
        return [(*p.communicate(timeout=300), p.returncode) for p in procs]

    results = ranks(t / "two")
    ok = all(code == 0 for _, _, code in results)
    one, two = (t / "one.jsonl").read_text(), (t / "two.jsonl").read_text() if ok else ""
    shares = [len(json.loads((t / f"two.json.part-{r}-of-2").read_text().split("\n", 1)[1])[0]["records"])
              if ok else 0 for r in (0, 1)]
    same = (ok and one == two and len(one.splitlines()) == 9 and shares == [5, 4] and
            json.loads((t / "one.json").read_text())["benchmarks"][0]["accuracy"] ==
            json.loads((t / "two.json").read_text())["benchmarks"][0]["accuracy"] and
            (t / "one.md").read_text() == (t / "two.md").read_text())
    print(f"--bench over two ranks: shares of {shares} items, {len(two.splitlines())} records merged by rank 0, the "
          f"same records, accuracy and table as one process's: {same}")
    # Rank 0 of a run with other settings (--limit 4) does not take rank 1's part of the run above: it waits for its
    # own rank 1's, then ends naming it.
    (t / "two.json").unlink()
    out, err, code = ranks(t / "two", "--limit", "4", "--part-timeout", "1", which=(0,))[0]
    stale = code == 1 and "two.json.part-1-of-2" in err and "still missing" in err and not (t / "two.json").exists()
    print(f"rank 0 beside a part of other settings: waits, then fails naming the part, no outputs: {stale}")
    out, err, code = ranks(t / "three", "--fewshot", t / "items.jsonl", which=(0,))[0]
    refused = code == 1 and "ranks split the items of --bench only" in err and "WORLD_SIZE=2 (RANK 0)" in err
    print(f"--fewshot under WORLD_SIZE=2 refused: {refused}")
    return same and stale and refused


if __name__ == "__main__":
    sys.exit(main())
