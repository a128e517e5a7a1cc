#!/usr/bin/env python3
"""Fault suite: rho_tokenize, rho_score and rho_pretrain killed with SIGKILL from outside at random points (fixed
seeds), then rerun (rho_pretrain: --resume when a checkpoint exists), several times in a row. After every kill,
everything a later stage would read must be complete: a dataset's manifest.json and each shard it lists (sha256),
rho_score's per-shard records against their shards, every checkpoint latest_checkpoint could pick (state.json,
the sha256 and completeness of both tensor files) and the Hugging Face export. The final outputs must equal an
uninterrupted run's byte for byte (CPU): dataset files, loss files, the last checkpoint and hf/, and the training
losses in log.jsonl.

Kill points: uniform over the uninterrupted run's wall time (so some land while a shard, manifest, checkpoint or
export is being written, some during start-up), plus for rho_pretrain one just after a given checkpoint appears.
The test also fails when too few kills land on a running process (the timing would then test nothing)."""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import (checkpoint_problems, latest_checkpoint, loss_records_problems, run,  # noqa: E402
                         token_dataset_problems, tree_hashes, write_model_yaml, write_word_corpus)

SEEDS = (1, 2, 3)
KILLS_PER_SEED = 3


class Suite:
    def __init__(self):
        self.ok = True
        self.kills = 0
        self.landed = 0

    def check(self, cond, msg):
        print(("ok   " if cond else "FAIL ") + msg, flush=True)
        self.ok &= bool(cond)

    def kill_at(self, cmd, delay, event=None):
        """Starts cmd; SIGKILLs it `delay` s after event() first holds (after start without an event). Returns True
        when the kill landed on a running process (False: it had already finished)."""
        p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        if event is not None:
            while not event() and p.poll() is None and time.time() - t0 < 300:
                time.sleep(0.001)
            t0 = time.time()
        while p.poll() is None and time.time() - t0 < delay:
            time.sleep(0.001)
        landed = p.poll() is None
        if landed:
            p.send_signal(signal.SIGKILL)
        p.wait()
        self.kills += 1
        self.landed += landed
        return landed


def count_at_least(folder: Path, pattern: str, k: int):
    """An event: at least k entries named like pattern exist in folder (temporaries of files being written count,
    so the kill can land while the file is written)."""
    return lambda: folder.exists() and sum(1 for _ in folder.glob(pattern)) >= k


def step_at_least(run_dir: Path, k: int):
    """An event: log.jsonl records step k (it is written as each step ends)."""
    def reached():
        try:
            lines = (run_dir / "log.jsonl").read_text().splitlines()
        except OSError:
            return False
        for line in reversed(lines):
            try:
                return json.loads(line).get("step", 0) >= k
            except ValueError:
                continue
        return False
    return reached


def uninterrupted(cmd, out: Path, what: str):
    """Runs cmd to the end and moves its output `out` aside to out_ref (so that the interrupted runs write to the
    same path); returns (seconds, the reference's file hashes, its shard count)."""
    t0 = time.time()
    run(*cmd)
    took = time.time() - t0
    ref_dir = out.with_name(out.name + "_ref")
    shutil.move(out, ref_dir)
    shards = len(json.loads((ref_dir / "manifest.json").read_text())["shards"])
    print(f"{what} uninterrupted: {took:.2f} s, {shards} shards")
    return took, tree_hashes(ref_dir), shards


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="folder with the rho_* tools")
    b = Path(ap.parse_args().bin)
    # One torch thread: on a loaded machine (ctest -j, builds) more threads than free cores make each tool many
    # times slower; the uninterrupted and the interrupted runs use the same count, as bit-identity needs.
    os.environ["OMP_NUM_THREADS"] = "1"
    s = Suite()
    with tempfile.TemporaryDirectory(prefix="rho_faults_") as tmp:
        t = Path(tmp)
        write_word_corpus(t / "c.jsonl", 3000)

        # --- rho_tokenize --------------------------------------------------------------------------------------
        out = t / "tok"
        tok_cmd = [b / "rho_tokenize", t / "c.jsonl", "--out", out, "--train-tokenizer", "--vocab-size", "320",
                   "--shard-tokens", "2000", "--quiet"]
        took, ref, n_shards = uninterrupted(tok_cmd, out, "rho_tokenize")
        # Finished: the manifest in place and progress.json removed after it (a rerun refuses to touch it).
        # Both present: killed between the two; the rerun finishes the run.
        def finished():
            return (out / "manifest.json").exists() and not (out / "progress.json").exists()

        for seed in SEEDS:
            rng = random.Random(seed)
            points = []
            for _ in range(KILLS_PER_SEED):
                if finished():
                    break
                # A random point: start-up (tokenizer training included) or after the k-th shard file appears.
                k, delay = rng.randint(0, n_shards), rng.uniform(0.0, 0.03)
                event = count_at_least(out, "shard_*", k) if k else None
                what = f"shard {k} +{delay * 1000:.0f}ms" if k else f"{delay * 1000:.0f}ms"
                landed = s.kill_at(tok_cmd, delay if k else rng.uniform(0.0, 0.9) * took, event)
                points.append(what + ("" if landed else "(finished)"))
                problems = token_dataset_problems(out)
                s.check(not problems, f"rho_tokenize seed {seed}: after a kill at {what}, manifest.json absent "
                        f"or complete {problems[:3]}")
            if not finished():
                run(*tok_cmd)
            got = tree_hashes(out)
            s.check(got == ref, f"rho_tokenize seed {seed}: killed at {', '.join(points)}, rerun: {len(got)} files "
                    f"byte-identical to the uninterrupted run")
            shutil.rmtree(out)
        shutil.move(t / "tok_ref", out)

        # --- rho_score -----------------------------------------------------------------------------------------
        vocab = json.loads((out / "manifest.json").read_text())["vocab_size"]
        write_model_yaml(t / "m.yaml", vocab)
        run(b / "rho_model", "init", t / "m.yaml", "--seed", "3", "--out", t / "hf")
        loss = t / "loss"
        score_cmd = [b / "rho_score", "--model", t / "hf", "--data", out, "--out", loss, "--seq-len", "32",
                     "--batch-size", "4", "--device", "cpu"]
        _, ref, n_loss = uninterrupted(score_cmd, loss, "rho_score")
        for seed in SEEDS:
            rng = random.Random(100 + seed)
            points = []
            for _ in range(KILLS_PER_SEED):
                # After the k-th loss file (shard, record or a temporary of either) appears, or during start-up.
                k, delay = rng.randint(0, 2 * n_loss), rng.uniform(0.0, 0.03)
                event = count_at_least(loss, "losses-*", k) if k else None
                what = f"loss file {k} +{delay * 1000:.0f}ms" if k else "start-up"
                landed = s.kill_at(score_cmd, delay if k else rng.uniform(0.2, 0.6), event)
                points.append(what + ("" if landed else "(finished)"))
                problems = token_dataset_problems(loss) + loss_records_problems(loss)
                s.check(not problems, f"rho_score seed {seed}: after a kill at {what}, manifest.json absent or "
                        f"complete, every shard record matches its shard {problems[:3]}")
            run(*score_cmd)
            got = tree_hashes(loss)
            extra = sorted(k for k in got if k not in ref and ".tmp." not in k)
            s.check({k: got.get(k) for k in ref} == ref and not extra,
                    f"rho_score seed {seed}: killed at {', '.join(points)}, rerun: {len(ref)} files byte-identical "
                    f"to the uninterrupted run, no other files but killed writers' temporaries {extra}")
            shutil.rmtree(loss)
        # Rescoring a complete loss dataset with another model, killed after its first new shard: the old
        # manifest must be gone (it would list that shard's old bytes).
        shutil.copytree(t / "loss_ref", loss)
        run(b / "rho_model", "init", t / "m.yaml", "--seed", "4", "--out", t / "hf4")
        killed = run(*[a if a != t / "hf" else t / "hf4" for a in score_cmd], "--test-kill-after-shards", "1",
                     expect=None)
        problems = token_dataset_problems(loss) + loss_records_problems(loss)
        s.check(killed.returncode == -signal.SIGKILL and not (loss / "manifest.json").exists() and not problems,
                f"rho_score over a complete loss dataset with another model, killed after 1 shard: the old "
                f"manifest.json is gone, records match shards {problems[:3]}")
        shutil.rmtree(loss)

        # --- rho_pretrain --------------------------------------------------------------------------------------
        run_dir = t / "run"
        (t / "run.yaml").write_text(f"""run: {{out_dir: {run_dir}, seed: 5, device: cpu}}
model: {{config: {t / 'm.yaml'}}}
data: {{train: {out}, seq_len: 32, batch_size: 4}}
optim: {{lr: 0.003, min_lr: 0.0003, warmup_steps: 3, max_steps: 24}}
train: {{log_every: 1, checkpoint_every: 3, keep_checkpoints: 2}}
""")
        train_cmd = [b / "rho_pretrain", t / "run.yaml"]
        t0 = time.time()
        run(*train_cmd)
        took = time.time() - t0
        shutil.move(run_dir, t / "run_ref")
        last = "checkpoints/step-00000024"
        final_files = [f"{last}/model.safetensors", f"{last}/optimizer.safetensors", f"{last}/state.json",
                       "hf/model.safetensors", "hf/config.json", "config.yaml"]

        def final(d):
            h = tree_hashes(d)
            return {f: h.get(f) for f in final_files}

        def losses(d):
            lines = [json.loads(x) for x in (Path(d) / "log.jsonl").read_text().splitlines()]
            return [(x["step"], x["loss"], x["grad_norm"]) for x in lines if x["type"] == "train"]

        ref, ref_losses = final(t / "run_ref"), losses(t / "run_ref")
        print(f"rho_pretrain uninterrupted: {took:.2f} s, 24 steps")
        for seed in SEEDS:
            rng = random.Random(200 + seed)
            points = []
            for k in range(KILLS_PER_SEED):
                resume = ["--resume"] if latest_checkpoint(run_dir) else []
                done = int(latest.name[5:]) if (latest := latest_checkpoint(run_dir)) else 0
                delay = rng.uniform(0.0, 0.05)
                if k == 1:  # while a checkpoint is written: its temporary directory has appeared
                    step = rng.choice([c for c in range(3, 25, 3) if c > done] or [24])
                    event = count_at_least(run_dir / "checkpoints", f"step-{step:08d}*", 1)
                    what = f"checkpoint {step} written +{delay * 1000:.0f}ms"
                else:  # after a random step (the hf export after the last one)
                    step = rng.randint(done + 1, 24) if done < 24 else 24
                    event = step_at_least(run_dir, step)
                    what = f"step {step} +{delay * 1000:.0f}ms"
                landed = s.kill_at(train_cmd + resume, delay, event)
                points.append(what + ("" if landed else "(finished)") + (" (resumed)" if resume else ""))
                problems = checkpoint_problems(run_dir)
                latest = latest_checkpoint(run_dir)
                s.check(not problems, f"rho_pretrain seed {seed}: after a kill at {what}, every checkpoint "
                        f"latest_checkpoint could pick is complete (it picks {latest.name if latest else 'none'}), "
                        f"hf/ absent or complete {problems[:3]}")
            resume = ["--resume"] if latest_checkpoint(run_dir) else []
            run(*train_cmd, *resume)
            got = final(run_dir)
            same = got == ref
            if not same:
                print("  differs:", [f for f in final_files if got[f] != ref[f]])
            stale = sorted(str(p.relative_to(run_dir)) for p in list((run_dir / "checkpoints").glob("step-*.tmp.*")) +
                           list(run_dir.glob("hf.tmp.*")) + list(run_dir.glob("hf.old.*")))
            s.check(not stale, f"rho_pretrain seed {seed}: no checkpoint or export temporaries of the killed runs "
                    f"left {stale}")
            s.check(same and losses(run_dir) == ref_losses,
                    f"rho_pretrain seed {seed}: killed at {', '.join(points)}, {'resumed' if resume else 'rerun'}: "
                    f"final checkpoint, hf export and per-step losses byte-identical to the uninterrupted run")
            shutil.rmtree(run_dir)

    # Most kills must hit a running process, or the random points tested nothing.
    s.check(s.landed >= 0.7 * s.kills, f"{s.landed} of {s.kills} kills landed on a running process")
    print("PASS" if s.ok else "FAIL")
    return 0 if s.ok else 1


if __name__ == "__main__":
    sys.exit(main())
