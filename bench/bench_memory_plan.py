"""rho_model plan against what rho_pretrain measures: for each setting (train.sharding, activation checkpointing),
one process trains 2 steps of a freshly initialised model on random tokens, and the peak its first step reached
(the "memory" log line: PeakMemory, on CUDA the caching allocator's peak of allocated bytes) is compared with the
plan's total. One JSON line per setting: {"bench": "memory_plan", "setting", "planned_bytes", "measured_bytes",
"ratio"}. On CUDA the plan is for bf16 autocast, on the CPU for fp32."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

import common


def main():
    ap = common.model_arguments()
    ap.add_argument("--settings", default="none,none+ac,gradients,parameters,parameters+ac",
                    help="train.sharding levels, each optionally +ac (activation checkpointing), comma-separated")
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
            r = subprocess.run([os.path.join(build, "apps", "rho_pretrain"), cfg], capture_output=True, text=True)
            row = {"bench": "memory_plan", "device": dev,
                   "gpu": torch.cuda.get_device_name() if dev == "cuda" else None,
                   "model_config": os.path.relpath(a.model_config, common.ROOT), "seq": a.seq, "batch": a.batch,
                   "setting": setting}
            if r.returncode != 0:
                row["error"] = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
                common.emit(row)
                failed = True
                continue
            with open(os.path.join(out, "log.jsonl")) as f:
                memory = next(j for j in map(json.loads, f) if j["type"] == "memory")
            plan = json.loads(subprocess.run(
                [os.path.join(build, "apps", "rho_model"), "plan", a.model_config, "--seq-len", str(a.seq),
                 "--micro-batch", str(a.batch), "--sharding", level, "--precision", "bf16" if dev == "cuda" else "fp32",
                 "--json"] + (["--activation-checkpointing"] if ac else []),
                check=True, capture_output=True, text=True).stdout)
            measured = memory["ranks"][0]["peak"]
            row.update(planned_bytes=plan["total"], measured_bytes=measured, ratio=plan["total"] / measured,
                       plan=plan["items"])
            common.emit(row)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
