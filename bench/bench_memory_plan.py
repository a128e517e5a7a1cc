"""rho_model plan against what rho_pretrain measures: for each setting (train.sharding, activation checkpointing),
one process trains a freshly initialised model on random tokens, and the peak its first step reached (the "memory"
log line: PeakMemory, on CUDA the caching allocator's peak of allocated bytes) is compared with the plan's total.
The process is stopped as soon as that line is written: the rest of its run (the second step, the final
checkpoint: 13 GB at the TinyLlama shape) measures nothing. One JSON line per setting: {"bench": "memory_plan",
"setting", "planned_bytes", "measured_bytes", "ratio"}; each run's time on stderr. On CUDA the plan is for bf16
autocast, on the CPU for fp32."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

import common


def first_memory_line(cmd, log_path, limit):
    """Runs cmd until its log holds the first step's "memory" line, then kills it (no checkpoint on the way out).
    Returns (the line, None, seconds taken) or (None, why not, seconds taken)."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        line, exited = None, False
        while line is None and not exited and time.monotonic() - t0 < limit:
            time.sleep(0.25)
            exited = p.poll() is not None  # before the read: a run that wrote its line and ended is still read
            if os.path.exists(log_path):
                with open(log_path) as f:  # whole lines only: the writer may be mid-line
                    rows = [json.loads(r) for r in f if r.endswith("\n")]
                line = next((j for j in rows if j.get("type") == "memory"), None)
        if p.poll() is None:
            p.kill()
            p.wait()
        took = time.monotonic() - t0
        if line is not None:
            return line, None, took
        err.seek(0)
        tail = err.read().strip().splitlines()
        if exited:
            return None, tail[-1] if tail else f"exit {p.returncode} without a memory line", took
        return None, f"no memory line after {limit} s" + (f" (last: {tail[-1]})" if tail else ""), took


def main():
    ap = common.model_arguments()
    ap.add_argument("--settings", default="none,none+ac,gradients,parameters,parameters+ac",
                    help="train.sharding levels, each optionally +ac (activation checkpointing), comma-separated")
    ap.add_argument("--run-limit", type=float, default=300, help="seconds one run may take to its first step")
    a = ap.parse_args()
    build = common.build_dir(a.build)
    dev = a.device
    with open(a.model_config) as f:
        import yaml  # PyYAML comes with the venv's transformers
        shape = yaml.safe_load(f)
    shape = shape.get("model", shape)
    failed = False
    with tempfile.TemporaryDirectory() as work:
        stream = torch.randint(3, shape["vocab_size"], (4 * a.batch * (a.seq + 1),),
                               generator=torch.Generator().manual_seed(0))
        common.write_token_dataset(os.path.join(work, "data"), stream, shape["vocab_size"], eos_id=2)
        for setting in a.settings.split(","):
            level, _, ac = setting.partition("+")
            out = os.path.join(work, f"run_{level}_{ac}")
            cfg = os.path.join(work, f"{level}_{ac}.yaml")
            with open(cfg, "w") as f:
                f.write(f"""run: {{out_dir: {out}, seed: 0, device: {dev}}}
model: {{config: {os.path.abspath(a.model_config)}}}
data: {{train: {work}/data, seq_len: {a.seq}, batch_size: {a.batch}, exclude_boundary: false}}
optim: {{max_steps: 2, warmup_steps: 1}}
train: {{sharding: {level}, activation_checkpointing: {str(bool(ac)).lower()}, export_hf: false,
         checkpoint_every: 1000, tensorboard: false}}
""")
            memory, why, took = first_memory_line([os.path.join(build, "apps", "rho_pretrain"), cfg],
                                                  os.path.join(out, "log.jsonl"), a.run_limit)
            shutil.rmtree(out, ignore_errors=True)
            print(f"memory_plan: {setting}: {took:.1f} s to the first step's memory line", file=sys.stderr, flush=True)
            row = {"bench": "memory_plan", "device": dev,
                   "gpu": torch.cuda.get_device_name() if dev == "cuda" else None,
                   "model_config": os.path.relpath(a.model_config, common.ROOT), "seq": a.seq, "batch": a.batch,
                   "setting": setting}
            if memory is None:
                row["error"] = why
                common.emit(row)
                failed = True
                continue
            plan = json.loads(subprocess.run(
                [os.path.join(build, "apps", "rho_model"), "plan", a.model_config, "--seq-len", str(a.seq),
                 "--micro-batch", str(a.batch), "--sharding", level, "--precision", "bf16" if dev == "cuda" else "fp32",
                 "--device", dev, "--json"] + (["--activation-checkpointing"] if ac else []),
                check=True, capture_output=True, text=True).stdout)
            measured = memory["ranks"][0]["peak"]
            row.update(planned_bytes=plan["total"], measured_bytes=measured, ratio=plan["total"] / measured,
                       plan=plan["items"])
            common.emit(row)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
