#!/usr/bin/env python3
"""Data parallelism through the CLIs, on the CPU with Gloo over loopback (no torchrun needed: each process gets
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, or SLURM_PROCID / SLURM_NTASKS, as a launcher would set them).

  1. training, 2 processes x batch 2 vs 1 process x batch 4 (the same global batch): equal per-step losses and
     final weights (1e-6) for CLM with gradient accumulation and small buckets, SLM with slm.scope=global
     (equal selection statistics too);
  1b. train.sharding optimizer, gradients and parameters with 2 and 3 processes (1 x batch 6, 2 x 3, 3 x 2):
     CLM with untied embeddings, SLM (scope global) with tied embeddings and activation checkpointing, and SLM in
     scope sequence; SLM in scopes micro_batch and step (whose pools are a rank's) against unsharded processes of
     the same number; a model whose unit sizes do not divide by 3. Equal losses, exported weights and AdamW state (assembled from the
     shards) to one process's; each rank's resident bytes of weights, gradients and optimizer state against the
     shares each level promises; under parameters, the first step's layer gathers (issued, prefetched) as planned;
  1c. one process in a group of one (RHO_PROCESS_GROUP=always, every collective through Gloo) writes the same
     checkpoint bytes as a plain run, unsharded and under sharding parameters; RHO_PROCESS_GROUP=yes is refused;
  2. scoring with 2 processes (torchrun-style and SLURM-style variables) writes the same files as 1 process;
  3. a rank killed with SIGKILL mid-run (train.sharding parameters): the other exits with a clear error within
     the collective timeout; --resume from the last checkpoint with 2 processes ends with the uninterrupted run's
     weights exactly, and with 3 processes (resharded, the same global batch) within 1e-6; a resume that changes
     the global batch is refused, and so is an unsharded checkpoint resumed at another world size;
  4. torchrun --no-python launches the same run (when torchrun is in the venv);
  5. two nodes on this machine: two torchrun agents (--nnodes 2 --nproc-per-node 2, c10d rendezvous on
     127.0.0.1), and 4 processes with SLURM-style variables as on 2 nodes, train (sharding parameters) to one
     process's weights; a worker of node 1 killed mid-run: node 0's workers exit naming the failed ranks, both
     agents exit non-zero, and --resume on two nodes again ends with the uninterrupted run's weights exactly;
  6. rho_model plan against the memory each rank measured (PeakMemory) in its first step, within 10%, and equal to
     the plan the run logs beside it: a 4-layer
     model in fp32 and bf16, with and without activation checkpointing and accumulation, at every sharding level
     with 1, 2 and 3 processes.
Exit 77 (skipped) when the build has no Gloo backend."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from cli_helpers import Checks, write_word_corpus

TIMEOUT = 20  # run.dist_timeout of every run (seconds)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, env=None):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(map(str, args))}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def rank_env(rank, world, port, slurm=False):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")}
    if slurm:
        env.update(SLURM_PROCID=str(rank), SLURM_NTASKS=str(world), SLURM_LOCALID=str(rank))
    else:
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


def launch(cmd, world, slurm=False):
    """Starts `world` processes of cmd; returns the Popen objects."""
    port = free_port()
    procs = []
    for r in range(world):
        procs.append(subprocess.Popen([str(c) for c in cmd], env=rank_env(r, world, port, slurm),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def wait_all(procs, what):
    outs = [p.communicate(timeout=600) for p in procs]
    for r, (p, (out, err)) in enumerate(zip(procs, outs)):
        if p.returncode != 0:
            raise SystemExit(f"FAILED: {what}, rank {r} exit {p.returncode}\n{out}\n{err}")
    return outs


def train_losses(out_dir):
    lines = [json.loads(l) for l in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
    return [l for l in lines if l["type"] == "train"]


def max_diff(a, b):
    """Largest |difference| over the tensors of two safetensors files (the CPU RNG state left out)."""
    return state_diff(*({k: v for k, v in load_file(str(p)).items() if k != "rng.cpu"} for p in (a, b)))


def final_ckpt(out_dir):
    return sorted((Path(out_dir) / "checkpoints").glob("step-*"))[-1]


def sharded_state(ckpt):
    """A sharded checkpoint's weights and AdamW state, whole, under the unsharded names ("<param>",
    "exp_avg.<param>", "exp_avg_sq.<param>"): each unit's pieces concatenated over the ranks, split by parameter."""
    state = json.loads((ckpt / "state.json").read_text())["sharding"]
    world = state["world_size"]
    shards = [load_file(str(ckpt / f"shard-{q:05d}-of-{world:05d}.safetensors")) for q in range(world)]
    out = {}
    for unit in state["units"]:
        for kind, prefix in (("param", ""), ("exp_avg", "exp_avg."), ("exp_avg_sq", "exp_avg_sq.")):
            flat = torch.cat([s[f"{unit['name']}.{kind}"] for s in shards])
            assert flat.numel() == unit["numel"], (unit["name"], flat.numel(), unit["numel"])
            for p in unit["params"]:
                out[prefix + p["name"]] = flat[p["offset"]:p["offset"] + p["numel"]].view(p["shape"])
    return out


def unsharded_state(ckpt):
    """An unsharded checkpoint's weights and AdamW state under the same names (steps and RNG left out)."""
    out = dict(load_file(str(ckpt / "model.safetensors")))
    out.update({k: v for k, v in load_file(str(ckpt / "optimizer.safetensors")).items()
                if k.startswith("exp_avg")})
    return out


def state_diff(a, b):
    """Largest |difference| over two dicts of tensors with the same names."""
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def check_memory(check, name, level, world, mem, one):
    """Each rank's resident bytes (the run's "memory" log line) against what the level promises, exactly, from the
    checkpoint's unit sizes: fp32 weights whole (optimizer, gradients) or this rank's shard of each layer plus the
    whole root unit (parameters); gradients whole plus the shard (optimizer, accumulating over micro-batches) or
    the shard alone; AdamW's two moments for the shard alone (and one step count)."""
    layout = json.loads((final_ckpt(mem["dir"]) / "state.json").read_text())["sharding"]["units"]
    shard = [(u["numel"] + world - 1) // world for u in layout]
    padded = sum(s * world for s in shard)
    total = sum(u["numel"] for u in layout)
    weights = 4 * (padded if level != "parameters" else shard[0] * world + sum(shard[1:]))
    grads = 4 * sum(shard) + (4 * total if level == "optimizer" else 0)
    optim = 8 * sum(shard) + 4
    base = one["ranks"][0]
    ok = all((r["weights"], r["gradients"], r["optimizer"]) == (weights, grads, optim) for r in mem["ranks"])
    r0 = mem["ranks"][0]
    check(ok and len(mem["ranks"]) == world,
          f"{name}, sharding {level}, {world} processes: per-rank bytes as promised; against 1 unsharded process "
          f"weights x{r0['weights'] / base['weights']:.3f}, gradients x{r0['gradients'] / base['gradients']:.3f}, "
          f"optimizer x{r0['optimizer'] / base['optimizer']:.3f}" +
          ("" if ok else f" (got {mem['ranks']}, expected weights {weights} gradients {grads} optimizer {optim})"))


def check_gathers(check, name, world, mem, scored, layers=2, accum=2):
    """The first step's layer all-gathers under sharding parameters (the memory line's "gathers"), on every rank:
    each forward gathers every layer, all but the first while the previous layer computes (prefetched); backward
    finds the last layer still gathered and gathers the others, each while the layer after it computes. Scopes
    global and step add a no-grad scoring forward per micro-batch."""
    forwards = accum * (2 if scored else 1)
    want = {"issued": forwards * layers + accum * (layers - 1), "prefetched": (forwards + accum) * (layers - 1)}
    got = [{k: r["gathers"][k] for k in want} for r in mem["ranks"]]
    waits = [r["gathers"]["wait_seconds"] for r in mem["ranks"]]
    ok = all(g == want for g in got)
    check(ok, f"{name}, sharding parameters, {world} processes: layer gathers {got[0]}, as planned {want}; host wait "
              f"{max(waits) * 1e3:.2f} ms at most" + ("" if ok else f" (got {got})"))


def memory_line(out_dir):
    lines = [json.loads(l) for l in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
    return dict(next(l for l in lines if l["type"] == "memory"), dir=out_dir)


def two_agents(torchrun, cmd, port, run_id):
    """Two torchrun agents, as on two nodes of 2 processes each, meeting at a c10d rendezvous on 127.0.0.1. The
    first serves the rendezvous store (as the agent on the --rdzv-endpoint host does on a cluster): the second
    starts once the first listens."""
    def agent():
        return subprocess.Popen([str(torchrun), "--nnodes", "2", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                                 "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id, "--max-restarts", "0",
                                 "--no-python"] + [str(c) for c in cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = agent()
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return [first, agent()]


def worker_ranks(agent):
    """{pid: RANK} of an agent's worker processes."""
    out = {}
    for pid in subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
        if ranks:
            out[int(pid)] = int(ranks[0])
    return out


def multi_node(check, t, pretrain, torchrun):
    # lr 2e-4: four ranks reorder the fp32 sums more than two (see the sharding cases).
    base = ["--set", "train.sharding=parameters", "--set", "optim.lr=2e-4", "--set", "optim.min_lr=2e-5"]
    one = t / "mn-1"
    run(*pretrain, "--set", f"run.out_dir={one}", "--set", "data.batch_size=4", *base)
    ref = sharded_state(final_ckpt(one))
    two = t / "mn-torchrun"
    wait_all(two_agents(torchrun, pretrain + ["--set", f"run.out_dir={two}", "--set", "data.batch_size=1"] + base,
                        free_port(), "mn"), "two torchrun agents")
    dw = state_diff(ref, sharded_state(final_ckpt(two)))
    ws = json.loads((final_ckpt(two) / "state.json").read_text())["world_size"]
    check(ws == 4 and dw <= 1e-6, f"torchrun --nnodes 2 --nproc-per-node 2 (two agents, c10d rendezvous on "
                                  f"127.0.0.1): world size {ws}, max |weight and AdamW state diff| to 1 process {dw:.2e}")
    slurm = t / "mn-slurm"
    port = free_port()
    procs = []
    for r in range(4):  # two "nodes" of two tasks: SLURM_LOCALID 0, 1, 0, 1
        env = rank_env(r, 4, port, slurm=True)
        env["SLURM_LOCALID"] = str(r % 2)
        procs.append(subprocess.Popen([str(c) for c in pretrain + ["--set", f"run.out_dir={slurm}",
                                                                   "--set", "data.batch_size=1"] + base],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    wait_all(procs, "4 processes with SLURM variables")
    dw = state_diff(ref, sharded_state(final_ckpt(slurm)))
    check(dw <= 1e-6, f"SLURM_PROCID 0-3, SLURM_LOCALID 0,1,0,1 (two nodes' tasks): max |weight and AdamW state diff| "
                      f"to 1 process {dw:.2e}")

    # A worker of node 1 killed after the step-10 checkpoint.
    # (60 steps: the kill after step 10 has 50 of slack before the run could end on a fast or idle machine.)
    long = ["--set", "optim.max_steps=60", "--set", "train.checkpoint_every=5", "--set", "data.batch_size=1"] + base
    full, cut = t / "mn-full", t / "mn-cut"
    wait_all(two_agents(torchrun, pretrain + ["--set", f"run.out_dir={full}"] + long, free_port(), "full"),
             "uninterrupted two-node run")
    agents = two_agents(torchrun, pretrain + ["--set", f"run.out_dir={cut}"] + long, free_port(), "cut")
    deadline = time.time() + 300
    while not (cut / "checkpoints" / "step-00000010").exists() and time.time() < deadline:
        time.sleep(0.05)
    # A worker of the agent that does not serve the rendezvous store (whose loss ends the job at once, as on a
    # cluster when the rendezvous host goes down).
    workers = [worker_ranks(a) for a in agents]
    if not workers[1] or not workers[0]:
        raise SystemExit(f"FAILED: no workers to kill after the step-10 checkpoint (found {workers}): the run "
                         "ended or never reached it")
    victim_pid, victim = max(workers[1].items(), key=lambda kv: kv[1])
    survivors = sorted(workers[0].values())
    os.kill(victim_pid, signal.SIGKILL)
    t0 = time.time()
    outs = []
    for a in agents:
        try:
            outs.append(a.communicate(timeout=TIMEOUT + 60))
        except subprocess.TimeoutExpired:
            a.kill()
            outs.append(a.communicate())
    took = time.time() - t0
    errors = [l for _, err in outs for l in err.splitlines() if l.startswith("rho_pretrain: error: rank")]
    node0 = [l for l in errors if any(l.startswith(f"rho_pretrain: error: rank {r}/4") for r in survivors)]
    # (Once one of them exits, its agent stops the other, which may not get to print.)
    named = all(f"{victim}" in l.split("failed or stopped")[0].split("rank")[-1] for l in node0) and node0
    check(all(a.returncode != 0 for a in agents) and named and took < TIMEOUT + 60,
          f"kill -9 of rank {victim} (the other node): both agents exited non-zero after {took:.1f} s; the first "
          f"node's workers (ranks {survivors}): " + " | ".join(l[:260] for l in node0))
    wait_all(two_agents(torchrun, pretrain + ["--set", f"run.out_dir={cut}", "--resume"] + long, free_port(), "resume"),
             "two-node resume")
    dw = state_diff(sharded_state(final_ckpt(full)), sharded_state(final_ckpt(cut)))
    check(final_ckpt(cut).name == "step-00000060" and dw == 0,
          f"--resume on two nodes after the kill: max |weight and AdamW state diff| to the uninterrupted run {dw:.2e}")


def plan_check(check, t, b, vocab):
    shape = {"vocab_size": vocab, "hidden_size": 128, "intermediate_size": 384, "num_layers": 4, "num_heads": 4,
             "num_kv_heads": 2, "max_position_embeddings": 128}
    (t / "plan-model.yaml").write_text("".join(f"{k}: {v}\n" for k, v in shape.items()))
    (t / "plan.yaml").write_text(f"""run: {{seed: 3, device: cpu, dist_timeout: {TIMEOUT}}}
model: {{config: {t / 'plan-model.yaml'}}}
data: {{train: {t / 'tok'}, seq_len: 64, batch_size: 4}}
optim: {{max_steps: 1, warmup_steps: 0}}
train: {{export_hf: false, tensorboard: false}}
""")
    variants = {"fp32": ([], ["--precision", "fp32"]),
                "bf16 + checkpointing": (["train.precision=bf16", "train.activation_checkpointing=true"],
                                         ["--precision", "bf16", "--activation-checkpointing"]),
                "bf16": (["train.precision=bf16"], ["--precision", "bf16"]),
                "fp32 + checkpointing": (["train.activation_checkpointing=true"],
                                         ["--precision", "fp32", "--activation-checkpointing"]),
                "fp32, accumulation 2": (["data.grad_accum=2"], ["--precision", "fp32", "--grad-accum", "2"])}
    cases = [(1, "none", v) for v in variants] + [(1, "parameters", "fp32")]
    cases += [(w, level, v) for level in ("none", "optimizer", "gradients", "parameters") for w in (2, 3)
              for v in ("fp32", "bf16 + checkpointing") if w == 2 or level == "parameters"]
    for world, level, name in cases:
        sets, flags = variants[name]
        d = t / f"plan-{world}-{level}-{name.replace(' ', '').replace(',', '').replace('+', '-')}"
        micro = 12 // world if world > 1 else 4
        args = [b / "rho_pretrain", t / "plan.yaml", "--set", f"run.out_dir={d}", "--set", f"train.sharding={level}",
                "--set", f"data.batch_size={micro}"] + [a for s in sets for a in ("--set", s)]
        wait_all(launch(args, world), f"plan check, {level}, {world} process(es), {name}")
        peaks = [m["peak"] for m in memory_line(d)["ranks"]]
        r = subprocess.run([str(b / "rho_model"), "plan", str(t / "plan-model.yaml"), "--gpus", str(world),
                            "--seq-len", "64", "--micro-batch", str(micro), "--sharding", level, "--backend", "gloo",
                            "--device", "cpu", "--json"] + flags, capture_output=True, text=True, check=True)
        planned = json.loads(r.stdout)["total"]
        ratios = [planned / p for p in peaks]
        logged = memory_line(d).get("planned")
        check(logged == planned, f"the memory log line's plan, {level}, {world} process(es), {name}: {logged} bytes, "
              f"rho_model plan {planned}")
        check(all(0.9 <= x <= 1.1 for x in ratios),
              f"rho_model plan, {level}, {world} process(es), {name}: planned {planned / 2**20:.2f} MiB, measured "
              + " / ".join(f"{p / 2**20:.2f}" for p in peaks) + " MiB (ratio "
              + " / ".join(f"{x:.3f}" for x in ratios) + ")")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="folder with the rho_* tools")
    args = ap.parse_args()
    b = Path(args.bin)
    check = Checks()
    # One torch thread per process: up to four ranks share the machine with other tests, and more threads than
    # cores make a rank lag its peers by seconds (run.dist_timeout bounds every wait). Every run, the
    # single-process references included, uses the same count.
    os.environ["OMP_NUM_THREADS"] = "1"

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_word_corpus(t / "c.jsonl", 400)
        run(b / "rho_tokenize", t / "c.jsonl", "--out", t / "tok", "--train-tokenizer", "--vocab-size", "320",
            "--shard-tokens", "2000", "--quiet")
        vocab = json.loads((t / "tok/manifest.json").read_text())["vocab_size"]
        model = (f"{{vocab_size: {vocab}, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, "
                 "num_kv_heads: 2, max_position_embeddings: 64}")
        (t / "run.yaml").write_text(f"""run: {{seed: 3, device: cpu, dist_timeout: {TIMEOUT}}}
model: {model}
data: {{train: {t / 'tok'}, seq_len: 32, batch_size: 4, eval: {{held: {t / 'tok'}}}, eval_batches: 4}}
optim: {{lr: 0.001, min_lr: 0.0001, warmup_steps: 2, max_steps: 8}}
train: {{log_every: 1, checkpoint_every: 4, export_hf: false}}
""")
        # An eval set of 4 batches per rank: with 3 ranks of batch 2 the 8 windows split 2 batches to rank 0 and 1 to
        # the others, who must still join the collectives of a sharded model's evaluation forwards.
        # lr 1e-3: AdamW's update is about lr * g / (|g| + eps), so for a gradient element near eps the fp32
        # rounding of a differently ordered sum moves a weight by up to ~lr * 1e-3 (lr 1e-2 gives 6e-6 here).
        pretrain = [b / "rho_pretrain", t / "run.yaml"]

        # Gloo missing from the build: the error says so; nothing else to test.
        probe = launch(pretrain + ["--set", f"run.out_dir={t / 'probe'}", "--set", "optim.max_steps=1",
                                   "--set", "data.batch_size=2"], 2)
        outs = [p.communicate(timeout=300) for p in probe]
        if any("built without gloo" in err for _, err in outs):
            print("SKIPPED: this librho has no Gloo backend (install libgloo-dev and rebuild)")
            return 77
        check(all(p.returncode == 0 for p in probe), "2-process smoke run: " +
              " | ".join(err.strip().splitlines()[-1] if err.strip() else "" for _, err in outs))

        # 1. Training: 2 x batch 2 against 1 x batch 4.
        cases = {
            "clm": ["data.grad_accum=2", "train.bucket_mb=0.01"],  # several buckets, accumulation
            "slm_global": ["train.stage=slm", "slm.rule=current", "slm.ratio=0.4", "slm.scope=global",
                           "data.grad_accum=2"],
        }
        for name, sets in cases.items():
            o = [a for s in sets for a in ("--set", s)]
            one, two = t / f"{name}-1", t / f"{name}-2"
            run(*pretrain, "--set", f"run.out_dir={one}", *o)
            wait_all(launch(pretrain + ["--set", f"run.out_dir={two}", "--set", "data.batch_size=2"] + o, 2),
                     f"{name}, 2 processes")
            l1, l2 = train_losses(one), train_losses(two)
            dl = max(abs(a["loss"] - b_["loss"]) for a, b_ in zip(l1, l2))
            dw = max_diff(final_ckpt(one) / "model.safetensors", final_ckpt(two) / "model.safetensors")
            do = max_diff(final_ckpt(one) / "optimizer.safetensors", final_ckpt(two) / "optimizer.safetensors")
            check(len(l1) == len(l2) == 8 and dl <= 1e-6 and dw <= 1e-6 and do <= 1e-6,
                  f"{name}: 2 processes vs 1, {len(l2)} steps, max |loss diff| {dl:.2e}, max |weight diff| {dw:.2e}, "
                  f"max |AdamW state diff| {do:.2e}")
            check(json.loads((final_ckpt(two) / "state.json").read_text())["world_size"] == 2,
                  f"{name}: the checkpoint records world_size 2")
            if name == "slm_global":
                ds = max(abs(a["selected_fraction"] - b_["selected_fraction"]) +
                         abs(a["kept_score"] - b_["kept_score"]) for a, b_ in zip(l1, l2))
                check(ds <= 1e-6, f"{name}: same selection (fraction and kept score) at every step, diff {ds:.2e}")

        # 1b. Sharding levels, 2 and 3 processes against 1 over the same global batch of 6.
        sharded_cases = {
            # hidden 40 with 2 of 4 heads for keys and values: every unit's size leaves a remainder mod 3
            "clm": ["data.grad_accum=2", "model.hidden_size=40", "model.num_heads=4", "model.num_kv_heads=2"],
            "slm_global_tied": ["train.stage=slm", "slm.rule=current", "slm.ratio=0.4", "slm.scope=global",
                                "data.grad_accum=2", "model.tie_word_embeddings=true",
                                "train.activation_checkpointing=true"],
        }
        # The other selection scopes, on the first case's model (their pools lie within a rank: sharding must not
        # change which tokens they keep).
        for scope in ("sequence", "micro_batch", "step"):
            sharded_cases[f"slm_{scope}"] = sharded_cases["clm"] + ["train.stage=slm", "slm.rule=current",
                                                                   "slm.ratio=0.4", f"slm.scope={scope}"]
        # lr 2e-4 keeps the fp32 reordering effect above (which scales with lr) near 5e-7 for this model, and weight
        # decay 1.0 makes a parameter stepped with the wrong decay group move by ~4e-6 a step: caught.
        adam = ["optim.lr=2e-4", "optim.min_lr=2e-5", "optim.weight_decay=1.0"]
        for name, sets in sharded_cases.items():
            o = [a for s in sets + adam for a in ("--set", s)]
            one = t / f"sh-{name}-1"
            run(*pretrain, "--set", f"run.out_dir={one}", "--set", "data.batch_size=6", *o)
            # Scopes micro_batch and step select within each rank's micro-batches: W ranks make W pools where one
            # process makes one, so their reference is unsharded data parallelism at the same world size.
            per_rank = name in ("slm_micro_batch", "slm_step")
            baselines = {}
            for world in (2, 3):
                if per_rank:
                    ref = t / f"sh-{name}-none-{world}"
                    wait_all(launch(pretrain + ["--set", f"run.out_dir={ref}", "--set",
                                                f"data.batch_size={6 // world}"] + o, world), f"{name}, {world} processes")
                else:
                    ref = one
                baselines[world] = (unsharded_state(final_ckpt(ref)), train_losses(ref),
                                    f"{world} unsharded processes" if per_rank else "1")
            for level in ("optimizer", "gradients", "parameters"):
                for world in (2, 3):
                    base, l1, against = baselines[world]
                    d = t / f"sh-{name}-{level}-{world}"
                    wait_all(launch(pretrain + ["--set", f"run.out_dir={d}", "--set", f"data.batch_size={6 // world}",
                                                "--set", f"train.sharding={level}"] + o, world),
                             f"{name}, sharding {level}, {world} processes")
                    l2 = train_losses(d)
                    dl = max(abs(a["loss"] - b_["loss"]) for a, b_ in zip(l1, l2))
                    ds = state_diff(base, sharded_state(final_ckpt(d)))
                    check(len(l1) == len(l2) == 8 and dl <= 1e-6 and ds <= 1e-6,
                          f"{name}, sharding {level}, {world} processes vs {against}: max |loss diff| {dl:.2e}, max "
                          f"|weight and AdamW state diff| {ds:.2e}")
                    if name.startswith("slm"):
                        ds = max(abs(a["selected_fraction"] - b_["selected_fraction"]) +
                                 abs(a["kept_score"] - b_["kept_score"]) for a, b_ in zip(l1, l2))
                        check(ds <= 1e-5, f"{name}, sharding {level}, {world} processes: same selection at every "
                                          f"step (fraction and kept score), diff {ds:.2e}")
                    mem = memory_line(d)
                    if level == "parameters":
                        check_gathers(check, name, world, mem, scored="scope=global" in " ".join(sets) or
                                      name == "slm_step")
                    if name == "clm" and level == "parameters" and world == 3:
                        units = json.loads((final_ckpt(d) / "state.json").read_text())["sharding"]["units"]
                        check(all(u["numel"] % 3 for u in units),
                              f"{name}: no unit's size divides by 3: {[u['numel'] for u in units]}")
                    if not per_rank:
                        check_memory(check, name, level, world, mem, memory_line(one))
        # The export of a parameters-sharded run (gathered unit by unit) holds the weights of its checkpoint.
        d = t / "sh-clm-parameters-3"
        run(*pretrain, "--set", f"run.out_dir={d}", "--set", "data.batch_size=6", "--set", "train.sharding=parameters",
            "--set", "optim.max_steps=9", "--set", "train.export_hf=true", "--resume", "--allow-change",
            "optim.max_steps", *[a for s in sharded_cases["clm"] + adam for a in ("--set", s)])
        ckpt = sharded_state(final_ckpt(d))
        hf = load_file(str(d / "hf" / "model.safetensors"))
        dh = max((hf[("" if k.startswith("lm_head") else "model.") + k] - v).abs().max().item()
                 for k, v in ckpt.items() if not k.startswith("exp_avg"))
        check(final_ckpt(d).name == "step-00000009" and dh == 0,
              f"3-process sharded checkpoint resumed by 1 process (batch 6), one more step, exported: the export "
              f"equals the checkpoint's weights (max diff {dh})")

        # 1c. One process in a group of one (RHO_PROCESS_GROUP=always): every collective goes through Gloo with a
        # single rank (as NCCL does on one GPU in the GPU kit); the checkpoint is byte-identical to the same run
        # without a group, unsharded (bucketed all-reduce) and sharded (gathers and reduce-scatters).
        o = [a for s in sharded_cases["clm"] + adam for a in ("--set", s)]
        for level in ("none", "parameters"):
            ckpts, mems, plans = {}, {}, {}
            for group in ("auto", "always"):
                d = t / f"group-{level}-{group}"
                run(*pretrain, "--set", f"run.out_dir={d}", "--set", "data.batch_size=6", "--set",
                    f"train.sharding={level}", *o,
                    env={**os.environ, "RHO_PROCESS_GROUP": group, "MASTER_PORT": str(free_port())})
                line = memory_line(d)
                ckpts[group], mems[group], plans[group] = final_ckpt(d), line["ranks"][0], line["planned"]
            files = sorted(f.name for f in ckpts["auto"].glob("*.safetensors"))
            same = files and all((ckpts["auto"] / f).read_bytes() == (ckpts["always"] / f).read_bytes() for f in files)
            gathers = [mems[g].get("gathers", {}).get("issued") for g in ("auto", "always")]
            # The plan adds what the group adds to the measured peak (all-reduce buckets; Gloo's copies).
            added = (plans["always"] - plans["auto"], mems["always"]["peak"] - mems["auto"]["peak"])
            check(same and gathers[0] == gathers[1] and abs(added[0] - added[1]) <= 0.01 * mems["auto"]["peak"],
                  f"sharding {level}, 1 process in a group of one (Gloo) vs no group: {len(files)} checkpoint files "
                  f"byte-identical, layer gathers {gathers}; the group adds {added[0]} bytes to the plan, "
                  f"{added[1]} to the measured peak")
        bad = subprocess.run([*map(str, pretrain), "--set", f"run.out_dir={t / 'group-bad'}"], capture_output=True,
                             text=True, env={**os.environ, "RHO_PROCESS_GROUP": "yes"})
        check(bad.returncode != 0 and "RHO_PROCESS_GROUP='yes' must be one of auto, always" in bad.stderr,
              f"RHO_PROCESS_GROUP=yes refused: {bad.stderr.strip().splitlines()[-1] if bad.stderr.strip() else ''}")

        # 2. Scoring: 2 processes (torchrun and SLURM variables) write what 1 process writes.
        (t / "m.yaml").write_text(model.strip("{}").replace(", ", "\n") + "\n")
        run(b / "rho_model", "init", t / "m.yaml", "--seed", "3", "--out", t / "hf")
        score = [b / "rho_score", "--model", t / "hf", "--data", t / "tok", "--seq-len", "32", "--batch-size", "4",
                 "--device", "cpu"]
        run(*score, "--out", t / "s1")
        wait_all(launch(score + ["--out", t / "s2"], 2), "rho_score, 2 processes")
        wait_all(launch(score + ["--out", t / "s3"], 2, slurm=True), "rho_score, 2 processes (SLURM)")
        files = sorted(p.name for p in (t / "s1").iterdir())
        same = all((t / d / f).read_bytes() == (t / "s1" / f).read_bytes() for d in ("s2", "s3") for f in files)
        check(same and sorted(p.name for p in (t / "s2").iterdir()) == files and len(files) > 2,
              f"rho_score: 2 processes (RANK and SLURM_PROCID) write the same {len(files)} files as 1")

        # 3. A rank killed mid-run: the other stops with a clear error; --resume reaches the same weights.
        # Resuming restores the shards, or reshards them for another world size.
        long_common = ["--set", "optim.max_steps=40", "--set", "train.checkpoint_every=5",
                       "--set", "train.sharding=parameters"]
        long = long_common + ["--set", "data.batch_size=3"]
        full, cut = t / "full", t / "cut"
        wait_all(launch(pretrain + ["--set", f"run.out_dir={full}"] + long, 2), "uninterrupted 2-process run")
        procs = launch(pretrain + ["--set", f"run.out_dir={cut}"] + long, 2)
        deadline = time.time() + 300
        while not (cut / "checkpoints" / "step-00000010").exists() and time.time() < deadline:
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.time()
        try:
            _, err0 = procs[0].communicate(timeout=TIMEOUT + 60)
            took = time.time() - t0
        except subprocess.TimeoutExpired:
            procs[0].kill()
            _, err0 = procs[0].communicate()
            took = float("inf")
        procs[1].communicate()
        last = err0.strip().splitlines()[-1] if err0.strip() else ""
        check(procs[0].returncode == 1 and "rho_pretrain: error: rank 0/2:" in last and took < TIMEOUT + 60 and
              "rank 1 of 2 failed" in last,
              f"kill -9 of rank 1: rank 0 exited {procs[0].returncode} after {took:.1f} s: {last[:300]}")
        done = sorted(p.name for p in (cut / "checkpoints").glob("step-*"))
        other = subprocess.run([str(a) for a in pretrain + ["--set", f"run.out_dir={cut}", "--resume"] + long],
                               capture_output=True, text=True, timeout=300)
        check(other.returncode == 1 and "written by 2 process(es) with data.batch_size 3" in other.stderr and
              "data.batch_size=6" in other.stderr,
              "resume changing the global batch is refused: " + other.stderr.strip().splitlines()[-1][:240])
        unsharded = subprocess.run([str(a) for a in pretrain + ["--set", f"run.out_dir={t / 'clm-2'}", "--resume",
                                                                "--set", "data.batch_size=4"]],
                                   capture_output=True, text=True, timeout=300)
        check(unsharded.returncode == 1 and "written by 2 process(es), resumed with 1" in unsharded.stderr,
              "an unsharded checkpoint at another world size is refused: " +
              unsharded.stderr.strip().splitlines()[-1][:200])
        reshard = t / "reshard"
        shutil.copytree(cut, reshard)
        wait_all(launch(pretrain + ["--set", f"run.out_dir={cut}", "--resume"] + long, 2), "resumed run")
        dw = state_diff(sharded_state(final_ckpt(full)), sharded_state(final_ckpt(cut)))
        check(final_ckpt(cut).name == "step-00000040" and dw == 0,
              f"resumed from {done[-1] if done else 'none'} after the kill, 2 processes: max |weight and AdamW state "
              f"diff| to the uninterrupted run {dw:.2e}")
        wait_all(launch(pretrain + ["--set", f"run.out_dir={reshard}", "--resume", "--set", "data.batch_size=2"] +
                        long_common, 3), "resumed run, 3 processes")
        dw = state_diff(sharded_state(final_ckpt(full)), sharded_state(final_ckpt(reshard)))
        check(final_ckpt(reshard).name == "step-00000040" and dw <= 1e-6 and
              json.loads((final_ckpt(reshard) / "state.json").read_text())["sharding"]["world_size"] == 3,
              f"the same checkpoint resumed by 3 processes (resharded 2 -> 3, batch 2 each): max |weight and AdamW "
              f"state diff| to the uninterrupted 2-process run {dw:.2e}")

        # 4. torchrun --no-python, when present.
        torchrun = Path(sys.executable).parent / "torchrun"
        if torchrun.exists():
            tr = t / "torchrun"
            run(torchrun, "--standalone", "--nproc-per-node", "2", "--no-python", *pretrain,
                "--set", f"run.out_dir={tr}", "--set", "data.batch_size=2", "--set", "data.grad_accum=2",
                "--set", "train.bucket_mb=0.01")
            dw = max_diff(final_ckpt(t / "clm-2") / "model.safetensors", final_ckpt(tr) / "model.safetensors")
            check(dw <= 1e-6, f"torchrun --no-python, 2 processes: max |weight diff| to the env-var launch {dw:.2e}")
        else:
            print("SKIPPED torchrun launch: torchrun is not in the venv")

        # 6. The memory planner against measured peaks.
        plan_check(check, t, b, vocab)

        # 5. Two nodes on one machine.
        if torchrun.exists():
            multi_node(check, t, pretrain, torchrun)
        else:
            print("SKIPPED two-node launches: torchrun is not in the venv")
    print("PASS" if check.ok else "FAIL")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
