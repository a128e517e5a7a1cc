#!/usr/bin/env python3
"""Rho-1's three stages through librho's CLIs on two devices, everything else equal, and how far their numbers are
apart: GSM8K's training set as the high-quality set, the Llama-2 32k tokenizer, a generated noisy corpus, a small
Llama (4 layers, hidden 256, seq 1024): rho_pretrain (reference, on GSM8K) -> rho_score (the corpus) -> rho_pretrain
CLM and SLM (on the corpus, same tokens). Tokenisation runs once; the devices then run side by side. Prints, per
run, the logged training and evaluation losses on both devices and their largest relative difference, and for the
reference losses the mean and largest absolute difference per token. One JSON line last.

    python scripts/gpu_kit/e2e.py --bin gpu-kit/build/apps --data gpu-kit/data --out /tmp/e2e [--devices cuda,cpu]
CUDA trains under bf16 autocast and scores with the same recipe, the CPU in fp32, so the numbers differ by
precision; the point is that the CUDA path runs end to end and lands where the CPU does.
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

MODEL = {"vocab_size": 32000, "hidden_size": 256, "intermediate_size": 704, "num_layers": 4, "num_heads": 8,
         "num_kv_heads": 4, "rope_theta": 10000.0, "rms_norm_eps": 1.0e-5, "max_position_embeddings": 1024,
         "tie_word_embeddings": False}
SEQ, BATCH, STEPS, LR = 1024, 4, 20, 1e-3


def run(args, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(map(str, args)) + "\n")
        f.flush()
        return subprocess.run([str(a) for a in args], stdout=f, stderr=subprocess.STDOUT).returncode


def tokenize(bin_dir, data, out):
    """The corpus (generated with GSM8K-style noise) and GSM8K's training set, Llama-2 pieces; once for all devices."""
    log = out / "tokenize.log"
    if run([sys.executable, ROOT / "scripts/demo/make_corpus.py", "--out", out / "text", "--seed", 0, "--hq-chars",
            100000, "--corpus-chars", 500_000, "--noise-fraction", 0.3, "--eval-problems", 10, "--eval-clean-chars",
            50_000, "--max-operand", 0], log):
        return False
    tok = ["--tokenizer", data / "tokenizers" / "llama2-32k.model"]
    return not (run([bin_dir / "rho_tokenize", out / "text" / "corpus.jsonl", "--out", out / "corpus", *tok], log) or
                run([bin_dir / "rho_tokenize", data / "gsm8k" / "train.jsonl", "--out", out / "hq", "--field",
                     "question", "--field", "answer", *tok], log) or
                run([bin_dir / "rho_tokenize", out / "text" / "eval_clean.jsonl", "--out", out / "target", *tok], log))


def train_config(out, dev, name, data, stage_extra=None):
    conf = {"run": {"out_dir": str(out / dev / name), "seed": 1, "device": dev},
            "model": MODEL,
            "data": {"train": str(data), "seq_len": SEQ, "batch_size": BATCH, "eval": {"target": str(out / "target")},
                     "eval_every": STEPS // 2, "eval_batches": 4},
            "optim": {"lr": LR, "min_lr": LR / 10, "warmup_steps": 2, "max_steps": STEPS},
            "train": {"log_every": 1, "checkpoint_every": STEPS, "export_hf": True}}
    for k, v in (stage_extra or {}).items():
        conf.setdefault(k, {}).update(v)
    path = out / dev / f"{name}.yaml"
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


def stages(bin_dir, out, dev):
    """reference -> rho_score -> CLM and SLM, as a list of commands run in order (a failure stops the device)."""
    (out / dev).mkdir(parents=True, exist_ok=True)
    ref = train_config(out, dev, "reference", out / "hq")
    clm = train_config(out, dev, "clm", out / "corpus")
    slm = train_config(out, dev, "slm", out / "corpus", {"train": {"stage": "slm"}, "slm": {
        "ratio": 0.6, "rule": "excess", "scope": "micro_batch", "reference_losses": str(out / dev / "losses")}})
    return [[bin_dir / "rho_pretrain", ref],
            [bin_dir / "rho_score", "--model", out / dev / "reference" / "hf", "--data", out / "corpus", "--out",
             out / dev / "losses", "--seq-len", SEQ, "--device", dev],
            [bin_dir / "rho_pretrain", clm],
            [bin_dir / "rho_pretrain", slm]]


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
    mean and largest absolute difference per token."""
    result = {"e2e": "ok", "runs": {}}
    if len(devices) != 2:
        return result
    x, y = devices
    for name in ("reference", "clm", "slm"):
        lx, ly = log_losses(out / x / name), log_losses(out / y / name)
        keys = sorted(set(lx) & set(ly), key=lambda k: (k[0], k[1], k[2]))
        rel = max((abs(lx[k] - ly[k]) / max(abs(ly[k]), 1e-9) for k in keys), default=None)
        result["runs"][name] = {"points": len(keys), "max_rel_diff": rel,
                                "last": {k[0] + (":" + k[1] if k[1] else ""): [lx[k], ly[k]] for k in keys[-2:]}}
        for k in keys:
            if k[0] == "eval" or k[2] in (1, STEPS // 2, STEPS):
                print(f"{name:10s} {k[0]:5s} {k[1]:7s} step {k[2]:3d}: {x} {lx[k]:.4f}  {y} {ly[k]:.4f}")
    rx, ry = ref_losses(out / x / "losses"), ref_losses(out / y / "losses")
    ok = ~(np.isnan(rx) | np.isnan(ry))
    manifests = [json.loads((out / d / "losses" / "manifest.json").read_text()) for d in devices]
    result["reference_losses"] = {"tokens": int(ok.sum()), "mean": [float(rx[ok].mean()), float(ry[ok].mean())],
                                  "mean_abs_diff": float(np.abs(rx[ok] - ry[ok]).mean()),
                                  "max_abs_diff": float(np.abs(rx[ok] - ry[ok]).max()),
                                  "precision": [m.get("precision") for m in manifests]}
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True, help="folder with gsm8k/ and tokenizers/llama2-32k.model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--devices", default="cuda,cpu")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps of each training run")
    a = ap.parse_args()
    global STEPS
    STEPS = a.steps
    bin_dir, data, out = Path(a.bin).resolve(), Path(a.data).resolve(), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    devices = a.devices.split(",")
    t0 = time.time()
    if not tokenize(bin_dir, data, out):
        print((out / "tokenize.log").read_text()[-3000:])
        print(json.dumps({"e2e": "failed", "stage": "tokenize"}))
        return 1
    print(f"--- tokenised in {time.time() - t0:.1f} s", flush=True)
    # The devices side by side, each running its stages in order; progress is printed as each stage ends.
    plans = {dev: stages(bin_dir, out, dev) for dev in devices}
    procs, failed, seconds = {}, [], {}

    def start(dev):
        cmd = plans[dev].pop(0)
        log = open(out / f"{dev}.log", "a")
        procs[dev] = (subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT), log, cmd)

    for dev in devices:
        start(dev)
    while procs:
        time.sleep(0.2)
        for dev, (p, log, cmd) in list(procs.items()):
            rc = p.poll()
            if rc is None:
                continue
            log.close()
            del procs[dev]
            print(f"--- [{time.time() - t0:6.1f} s] {dev}: {Path(str(cmd[0])).name} {Path(str(cmd[-1])).name} "
                  f"exit {rc}", flush=True)
            if rc != 0:
                print((out / f"{dev}.log").read_text()[-3000:])
                failed.append(dev)
            elif plans[dev]:
                start(dev)
            else:
                seconds[dev] = round(time.time() - t0, 1)
    if failed:
        print(json.dumps({"e2e": "failed", "devices": failed}))
        return 1
    result = compare(out, devices)
    result["seconds"] = seconds
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
