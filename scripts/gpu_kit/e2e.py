#!/usr/bin/env python3
"""The Rho-1 pipeline through librho's CLIs on two devices, the same config otherwise, and how far their numbers
are apart: GSM8K's training set as the high-quality set, the Llama-2 32k tokenizer, a small Llama (4 layers,
hidden 256), reference -> rho_score -> CLM and SLM -> few-shot evaluation. Prints, per run, the logged training
and evaluation losses on both devices and their largest relative difference, and for the reference losses the
mean and largest absolute difference per token. One JSON line last. The two devices run side by side.

    python scripts/gpu_kit/e2e.py --bin gpu-kit/build/apps --data gpu-kit/data --out /tmp/e2e [--devices cuda,cpu]
CUDA trains under bf16 autocast and scores in bf16, the CPU in fp32, so the numbers differ by precision; the
point is that the CUDA path runs end to end and lands where the CPU does (differences of a few percent).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]

MODEL = {"model": {"vocab_size": 32000, "hidden_size": 256, "intermediate_size": 704, "num_layers": 4,
                   "num_heads": 8, "num_kv_heads": 4, "rope_theta": 10000.0, "rms_norm_eps": 1.0e-5,
                   "max_position_embeddings": 1024, "tie_word_embeddings": False}}


def config(data, model_yaml, device):
    shipped = yaml.safe_load((ROOT / "configs/demo/gsm8k-gpu.yaml").read_text())
    d = shipped["data"]
    d["hq"]["paths"] = [str(data / "gsm8k" / "train.jsonl")]
    d["eval_problems"] = str(data / "gsm8k" / "test.jsonl")
    d["fewshot_prompt"] = str(data / "gsm8k" / "fewshot_cot_prompt.md")
    d["generate"].update(corpus_chars=500_000, eval_clean_chars=50_000)
    return {"device": device, "seeds": [1], "data": d,
            "tokenizer": {"model": str(data / "tokenizers" / "llama2-32k.model")},
            "model": str(model_yaml), "seq_len": 1024,
            "reference": {"steps": 20, "batch_size": 4, "lr": 0.001},
            "pretrain": {"steps": 20, "batch_size": 4, "lr": 0.001, "eval_every": 10},
            "slm": {"ratio": 0.6},
            "eval": {**shipped["eval"], "fewshot_limit": 4, "max_new_tokens": 16},
            "view": {"start": 0, "length": 200}, "categories": {"windows": 2}}


def log_losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return {(r["type"], r.get("set", ""), r["step"]): r["loss"] for r in rows if "loss" in r}


def ref_losses(folder):
    files = sorted(folder.glob("losses-*.bin"))
    dtype = json.loads((folder / "manifest.json").read_text()).get("dtype", "float32")
    if dtype == "bfloat16":
        return np.concatenate([(np.fromfile(f, "<u2").astype(np.uint32) << 16).view(np.float32) for f in files])
    return np.concatenate([np.fromfile(f, "<f4") for f in files])


def compare(out, devices):
    """Per run, the logged losses on both devices and their largest relative difference; the reference losses'
    mean and largest absolute difference per token; each report's final target loss and accuracy."""
    result = {"e2e": "ok", "runs": {}}
    if len(devices) == 2:
        x, y = devices
        for run in ("reference", "clm-seed1", "slm-seed1"):
            lx, ly = log_losses(out / x / "runs" / run), log_losses(out / y / "runs" / run)
            keys = sorted(set(lx) & set(ly), key=lambda k: (k[0], k[1], k[2]))
            rel = max((abs(lx[k] - ly[k]) / max(abs(ly[k]), 1e-9) for k in keys), default=None)
            result["runs"][run] = {"points": len(keys), "max_rel_diff": rel,
                                   "last": {k[0] + (":" + k[1] if k[1] else ""): [lx[k], ly[k]] for k in keys[-3:]}}
            for k in keys:
                print(f"{run:10s} {k[0]:5s} {k[1]:10s} step {k[2]:4d}: {x} {lx[k]:.4f}  {y} {ly[k]:.4f}")
        rx, ry = ref_losses(out / x / "losses" / "reference"), ref_losses(out / y / "losses" / "reference")
        ok = ~(np.isnan(rx) | np.isnan(ry))
        result["reference_losses"] = {"tokens": int(ok.sum()), "mean": [float(rx[ok].mean()), float(ry[ok].mean())],
                                      "mean_abs_diff": float(np.abs(rx[ok] - ry[ok]).mean()),
                                      "max_abs_diff": float(np.abs(rx[ok] - ry[ok]).max())}
        for dev in devices:
            s = json.loads((out / dev / "report" / "summary.json").read_text())
            result.setdefault("summary", {})[dev] = {k: s.get(k) for k in ("final_target_loss", "fewshot_accuracy")}
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True, help="folder with gsm8k/ and tokenizers/llama2-32k.model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--devices", default="cuda,cpu")
    a = ap.parse_args()
    data, out = Path(a.data).resolve(), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_yaml = out / "model.yaml"
    model_yaml.write_text(yaml.safe_dump(MODEL))
    devices = a.devices.split(",")
    # The devices run side by side (the GPU run barely uses the CPU); each logs to <out>/<device>.log.
    procs, seconds = {}, {}
    t0 = time.time()
    for dev in devices:
        cfg = out / f"{dev}.yaml"
        cfg.write_text(yaml.safe_dump(config(data, model_yaml, dev), sort_keys=False))
        log = open(out / f"{dev}.log", "w")
        procs[dev] = (subprocess.Popen([sys.executable, str(ROOT / "scripts/demo/pipeline.py"), "--config", str(cfg),
                                        "--bin", a.bin, "--out", str(out / dev)], stdout=log,
                                       stderr=subprocess.STDOUT), log)
    failed = []
    for dev, (p, log) in procs.items():
        rc = p.wait()
        log.close()
        seconds[dev] = round(time.time() - t0, 1)
        text = (out / f"{dev}.log").read_text()
        stages = [line for line in text.splitlines() if line.startswith("=== [")]
        print(f"--- pipeline on {dev}: exit {rc}, done after {seconds[dev]} s\n" + "\n".join(stages), flush=True)
        if rc != 0:
            print(text[-3000:])
            failed.append(dev)
    if failed:
        print(json.dumps({"e2e": "failed", "devices": failed, "seconds": seconds}))
        return 1
    result = compare(out, devices)
    result["seconds"] = seconds
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
