"""Sharded training on one device: what train.sharding parameters costs, and whether its layer all-gathers overlap
compute, measured through a process group of one (RHO_PROCESS_GROUP=always: NCCL on CUDA, Gloo on the CPU), so
the collectives run for real on a single GPU.

Three runs of librho's Trainer (bench_train) on the same random tokens and initial weights:
  none        no sharding, no process group (the reference step time)
  parameters  sharding parameters without a group: the sharded code, collectives as local copies
  group       sharding parameters in a group of one: every gather and reduce-scatter through the backend
For each: seconds per step, tokens/s, peak bytes, the first step's layer gathers (issued, prefetched, host wait;
the "memory" log line), and the step time against `none`. With --profile-dir the `group` run's last step is
traced; on CUDA the trace gives the time of the GPU work off the compute stream (NCCL's) and the part of it the
compute stream's kernels overlapped (a gather hidden behind compute overlaps entirely). One JSON line per run.

    python bench/bench_sharded.py [--model-config configs/model/smollm2-135m.yaml] [--device cpu|cuda]
                                  [--seq 256] [--batch 8] [--warmup 2] [--steps 5] [--profile-dir D]
"""
import collections
import json
import os
import socket
import subprocess
import tempfile

import torch

import common


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_overlap(trace_path):
    """GPU work off the compute stream in a Kineto trace (the stream with the most kernel time computes; NCCL runs
    on its own streams, and with one rank an all-gather is a device-to-device copy there): how many kernels and
    copies, their milliseconds, the fraction of that time during which the compute stream ran a kernel, and the
    commonest names. None for a trace without kernels (the CPU)."""
    with open(trace_path) as f:
        events = [e for e in json.load(f).get("traceEvents", [])
                  if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    kernels = [e for e in events if e["cat"] == "kernel"]
    if not kernels:
        return None
    per_stream = collections.Counter()
    for e in kernels:
        per_stream[e.get("tid")] += e["dur"]
    main_stream = per_stream.most_common(1)[0][0]
    compute = sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels if e.get("tid") == main_stream)
    side = [e for e in events if e.get("tid") != main_stream]
    total = overlapped = 0.0
    for e in side:
        a, b = e["ts"], e["ts"] + e["dur"]
        total += b - a
        end = a  # the union of compute kernels within [a, b)
        for s, t in compute:
            if s >= b:
                break
            if t > end:
                overlapped += min(t, b) - max(s, end)
                end = min(t, b)
    names = collections.Counter(e["name"].split("(")[0][:60] for e in side)
    return {"events": len(side), "ms": round(total / 1e3, 3),
            "overlapped_fraction": round(overlapped / total, 4) if total else None,
            "names": [n for n, _ in names.most_common(3)]}


def yaml_for(work, name, sharding, a):
    return f"""run: {{out_dir: {work}/run_{name}, seed: 0, device: {a.device}}}
model: {{init_from: {work}/hf}}
data: {{train: {work}/data, seq_len: {a.seq}, batch_size: {a.batch}, exclude_boundary: false}}
optim: {{lr: 3.0e-4, min_lr: 3.0e-5, warmup_steps: 10, max_steps: 100000, weight_decay: 0.1}}
train: {{sharding: {sharding}, log_every: 1000000, checkpoint_every: 1000000, export_hf: false, tensorboard: false}}
"""


def main():
    ap = common.model_arguments()
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--profile-dir", help="write the group run's traced step there (train_sharded.json)")
    a = ap.parse_args()
    build = common.build_dir(a.build)
    if a.profile_dir:
        os.makedirs(a.profile_dir, exist_ok=True)
    base = {"bench": "sharded", "device": a.device,
            "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None,
            "model_config": os.path.relpath(a.model_config, common.ROOT), "seq": a.seq, "batch": a.batch,
            "steps": a.steps}
    failed = False
    with tempfile.TemporaryDirectory() as work:
        cfg = common.init_model(build, a.model_config, os.path.join(work, "hf"))
        stream = torch.randint(3, cfg["vocab_size"], (4 * a.batch * (a.seq + 1),),
                               generator=torch.Generator().manual_seed(0))
        common.write_token_dataset(os.path.join(work, "data"), stream, cfg["vocab_size"], eos_id=2)
        reference = None
        for name, sharding, group in (("none", "none", "auto"), ("parameters", "parameters", "auto"),
                                      ("group", "parameters", "always")):
            path = os.path.join(work, f"{name}.yaml")
            with open(path, "w") as f:
                f.write(yaml_for(work, name, sharding, a))
            trace = os.path.join(a.profile_dir, "train_sharded.json") if a.profile_dir and name == "group" else None
            env = {**os.environ, "RHO_PROCESS_GROUP": group, "MASTER_PORT": str(free_port())}
            cmd = [os.path.join(build, "bench", "bench_train"), "--config", path, "--warmup", str(a.warmup),
                   "--steps", str(a.steps)] + (["--profile", trace] if trace else [])
            row = dict(base, run=name, sharding=sharding, process_group=group)
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            if r.returncode != 0:
                row["error"] = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
                common.emit(row)
                failed = True
                continue
            out = json.loads(r.stdout.strip().splitlines()[-1])
            with open(os.path.join(work, f"run_{name}", "log.jsonl")) as f:
                memory = next(j for j in map(json.loads, f) if j["type"] == "memory")["ranks"][0]
            row.update(backend=out["backend"], step_seconds=round(out["step_seconds"], 5),
                       tokens_per_s=round(out["tokens_per_s"], 1), peak_bytes=out["peak_bytes"],
                       gathers=memory.get("gathers"))
            if name == "none":
                reference = out["step_seconds"]
            elif reference:
                row["step_time_vs_none"] = round(out["step_seconds"] / reference, 4)
            if trace:
                row["side_streams"] = stream_overlap(trace)
            common.emit(row)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
