#!/usr/bin/env python3
"""Columnar input throughput: rho_tokenize on the same documents as JSON Lines, Parquet (pyarrow's defaults:
snappy, 1M-row groups; and zstd) and an Arrow IPC stream (the `datasets` cache format), same tokenizer, same
threads, side by side in one run. Reports, per input, the best of --repeats wall-clock runs: seconds, text MB/s
(the documents' UTF-8 bytes, the same for every input), file MB/s (the bytes as stored), tokens/s, and the ratio to
JSON Lines; the token ids are checked equal. Prints JSON.

Documents: GSM8K train (question + answer) repeated to about --megabytes MB when $RHO_SHARED_DATA (default
<source>/../shared/data) has it, else generated sentences; a SentencePiece model trained on them by rho_tokenize.

  .venv/bin/python bench/bench_tokenize_columnar.py --rho-tokenize build/apps/rho_tokenize
"""
import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def documents(megabytes):
    shared = Path(os.environ.get("RHO_SHARED_DATA", ROOT.parent / "shared" / "data"))
    gsm = shared / "gsm8k" / "train.jsonl"
    if gsm.exists():
        base = [(j["question"] + "\n" + j["answer"]) for j in map(json.loads, gsm.read_text().splitlines())]
        source = f"GSM8K train ({gsm})"
    else:
        rng = random.Random(0)
        words = "the a cat sat on mat 12 plus 30 equals 42 she sold clips to friends in May half as many".split()
        base = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 200))) for _ in range(5000)]
        source = "generated sentences"
    docs, size = [], 0
    while size < megabytes * 1e6:
        for d in base:
            docs.append(d)
            size += len(d.encode())
            if size >= megabytes * 1e6:
                break
    return docs, size, source


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rho-tokenize", default=str(ROOT / "build" / "apps" / "rho_tokenize"))
    ap.add_argument("--megabytes", type=float, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    docs, text_bytes, source = documents(args.megabytes)
    with tempfile.TemporaryDirectory(prefix="rho_bench_columnar_") as tmp:
        t = Path(tmp)
        inputs = {"jsonl": t / "c.jsonl", "parquet_snappy": t / "c.parquet", "parquet_zstd": t / "z.parquet",
                  "arrow_stream": t / "c.arrow"}
        inputs["jsonl"].write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        table = pa.table({"text": docs})
        pq.write_table(table, inputs["parquet_snappy"])
        pq.write_table(table, inputs["parquet_zstd"], compression="zstd")
        with pa.OSFile(str(inputs["arrow_stream"]), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
            w.write_table(table, max_chunksize=1000)
        subprocess.run([args.rho_tokenize, inputs["jsonl"], "--out", t / "tok", "--train-tokenizer", "--vocab-size",
                        "8000", "--train-sentences", "200000", "--quiet"], check=True, capture_output=True)
        model = t / "tok" / "tokenizer.model"
        results, ids = {}, {}
        for name, path in inputs.items():
            best = None
            for r in range(args.repeats):
                out = t / f"out-{name}-{r}"
                t0 = time.perf_counter()
                subprocess.run([args.rho_tokenize, path, "--out", out, "--tokenizer", model, "--threads",
                                str(args.threads), "--quiet"], check=True, capture_output=True)
                took = time.perf_counter() - t0
                best = took if best is None else min(best, took)
                m = json.loads((out / "manifest.json").read_text())
                ids[name] = b"".join((out / s["file"]).read_bytes() for s in m["shards"])
                tokens = m["num_tokens"]
                subprocess.run(["rm", "-rf", out], check=True)
            results[name] = {"seconds": round(best, 3), "file_mb": round(path.stat().st_size / 1e6, 2),
                             "text_mb_per_s": round(text_bytes / 1e6 / best, 2),
                             "file_mb_per_s": round(path.stat().st_size / 1e6 / best, 2),
                             "tokens_per_s": round(tokens / best)}
        for name in results:
            results[name]["speed_vs_jsonl"] = round(results["jsonl"]["seconds"] / results[name]["seconds"], 3)
        print(json.dumps({
            "benchmark": "tokenize_columnar", "documents": source, "num_documents": len(docs),
            "text_mb": round(text_bytes / 1e6, 2), "threads": args.threads, "repeats": args.repeats,
            "pyarrow": pa.__version__, "ids_equal": all(v == ids["jsonl"] for v in ids.values()),
            "inputs": results}, indent=1))


if __name__ == "__main__":
    main()
