#!/usr/bin/env python3
"""configs/demo/gsm8k-gpu.yaml, the pipeline on real data, at toy sizes on the CPU: GSM8K's training set as the
high-quality set, the Llama-2 32k tokenizer, GSM8K's test set scored 8-shot with its chain-of-thought prompt.
A config that starts from gsm8k-gpu.yaml changes only the sizes, the device, the model, the number of test
problems and their generation length; the data files are the shipped config's (found under $RHO_SHARED_DATA), and
so are the other evaluation settings. Exits 77 (skipped) without $RHO_SHARED_DATA (default
<source>/../shared/data)."""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import ROOT, run_pipeline  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    args = ap.parse_args()
    shared = Path(os.environ.get("RHO_SHARED_DATA", ROOT / ".." / "shared" / "data")).resolve()
    needed = [shared / "gsm8k" / "train.jsonl", shared / "gsm8k" / "test.jsonl",
              shared / "gsm8k" / "fewshot_cot_prompt.md", shared / "tokenizers" / "llama2-32k.model"]
    if not all(p.exists() for p in needed):
        print(f"SKIPPED: the shared data is absent ({', '.join(str(p) for p in needed if not p.exists())})")
        return 77
    shipped = yaml.safe_load((ROOT / "configs/demo/gsm8k-gpu.yaml").read_text())
    data = shipped["data"]
    data["hq"]["paths"] = [str(shared / "gsm8k" / "train.jsonl")]
    data["eval_problems"] = str(shared / "gsm8k" / "test.jsonl")
    data["fewshot_prompt"] = str(shared / "gsm8k" / "fewshot_cot_prompt.md")
    data["generate"].update(corpus_chars=200_000, eval_clean_chars=20_000)
    small = {
        "base": str(ROOT / "configs/demo/gsm8k-gpu.yaml"),
        "device": "cpu",
        "seeds": [1],
        "data": data,
        "tokenizer": {"model": str(shared / "tokenizers" / "llama2-32k.model")},
        "model": str(ROOT / "configs/model/tiny.yaml"),
        "seq_len": 1024,  # the 8-shot prompt is about 900 tokens
        "reference": {"steps": 6, "batch_size": 2, "lr": 0.003},
        "pretrain": {"steps": 6, "batch_size": 2, "lr": 0.003, "eval_every": 3},
        "eval": {**shipped["eval"], "fewshot_limit": 3, "max_new_tokens": 8},
        "view": {"start": 0, "length": 200},
        "categories": {"windows": 2},
    }
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = Path(tmp) / "gsm8k-small.yaml", Path(tmp) / "gsm8k"
        cfg.write_text(yaml.safe_dump(small, sort_keys=False))
        r = run_pipeline(cfg, args.bin, out)
        print(r.stdout[-3000:], r.stderr[-3000:])
        ok = True
        hq = json.loads((out / "tokens/hq/manifest.json").read_text())
        ok &= hq["vocab_size"] == 32000 and hq["num_tokens"] > 1_000_000  # all of GSM8K train, Llama-2 pieces
        ev = json.loads((out / "eval/slm-seed1.json").read_text())["fewshot"][0]
        ok &= ev["items"] == 3 and ev["items_file"] == str(shared / "gsm8k" / "test.jsonl")
        ok &= all(p["prompt_tokens"] > 500 for p in ev["predictions"])  # the 8-shot prompt went in
        s = json.loads((out / "report/summary.json").read_text())
        ok &= s["eval_items"] == 3 and s["seeds"] == 1 and (out / "report/report.html").stat().st_size > 500
        print(f"hq tokens {hq['num_tokens']}, prompt tokens {[p['prompt_tokens'] for p in ev['predictions']]}, "
              f"final target loss {s['final_target_loss']}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
