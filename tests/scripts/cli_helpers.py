"""Shared by the CLI tests (faults, bad input): running the tools, building small inputs with the tools
themselves, and checking that what a later stage reads is complete (the same rules as the library's readers)."""
import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORDS = "the a cat dog sat ran on under table garden quickly slowly 1 2 3 4 5 plus minus equals".split()


class Checks:
    """check(cond, msg) prints "ok" or "FAIL" and the message, and remembers a failure: check.ok at the end."""

    def __init__(self):
        self.ok = True

    def __call__(self, cond, msg):
        print(("ok   " if cond else "FAIL ") + msg, flush=True)
        self.ok &= bool(cond)


def run(*args, expect=0, env=None, timeout=600, **kw):
    """Runs a command; checks its exit code unless expect is None. Returns the CompletedProcess (text)."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout, **kw)
    if expect is not None and r.returncode != expect:
        raise SystemExit(f"expected exit {expect}, got {r.returncode}: {' '.join(map(str, args))}\n"
                         f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def run_pipeline(config, tools, out, expect=0):
    """scripts/demo/pipeline.py with `config` into `out`, using the rho_* tools in folder `tools`."""
    return run(sys.executable, ROOT / "scripts/demo/pipeline.py", "--config", config, "--bin", tools, "--out", out,
               expect=expect, timeout=None)


def chromium_output(chromium, *args, timeout=60):
    """Headless Chromium's stdout for args (with the usual headless flags and a profile folder of its own), or ""
    when it hangs twice past `timeout` seconds: a check on its output then fails, the test does not hang. A hung
    browser is stopped with all its processes (its own session)."""
    for _ in range(2):
        with tempfile.TemporaryDirectory(prefix="rho_chromium_") as profile:
            flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     f"--user-data-dir={profile}"]
            p = subprocess.Popen([str(chromium), *flags, *map(str, args)], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, start_new_session=True)
            try:
                return p.communicate(timeout=timeout)[0]
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    return ""


def write_word_corpus(path: Path, docs: int, seed=0, max_words=40):
    """A JSON Lines corpus of random sentences over a small vocabulary (a tokenizer trains on it in a second)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(docs):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, max_words)))}) + "\n")


def tiny_model_fields(vocab: int) -> dict:
    return {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
            "num_kv_heads": 2, "max_position_embeddings": 64}


def write_model_yaml(path: Path, vocab: int):
    path.write_text("".join(f"{k}: {v}\n" for k, v in tiny_model_fields(vocab).items()))


def tiny_tokens_and_model(tools: Path, t: Path, docs=1500):
    """A word corpus tokenised into t/tok (a 320-piece tokenizer trained on it), the tiny model config t/m.yaml
    for its vocabulary and a model initialised from it in t/ref (seed 3): what small training runs need."""
    write_word_corpus(t / "c.jsonl", docs)
    run(tools / "rho_tokenize", t / "c.jsonl", "--out", t / "tok", "--train-tokenizer", "--vocab-size", "320",
        "--quiet")
    write_model_yaml(t / "m.yaml", json.loads((t / "tok" / "manifest.json").read_text())["vocab_size"])
    run(tools / "rho_model", "init", t / "m.yaml", "--seed", "3", "--out", t / "ref")


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_hashes(root: Path) -> dict:
    """relative path -> sha256 of every file below root (what 'unchanged' means for an output folder)."""
    root = Path(root)
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def flip_byte(path: Path, offset: int, mask=0x01):
    """Corrupts one byte in place (same size: only a checksum can tell)."""
    data = bytearray(Path(path).read_bytes())
    data[offset % len(data)] ^= mask
    Path(path).write_bytes(bytes(data))


def truncate(path: Path, keep: int):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep] if keep >= 0 else data[:keep])


# --- what later stages read must be complete -------------------------------------------------------------------


def safetensors_ok(path: Path) -> str:
    """'' when the file is a complete safetensors file (header parses, every tensor's bytes are there)."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        return f"{path}: {len(data)} bytes"
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        return f"{path}: header of {n} bytes in a file of {len(data)}"
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        return f"{path}: header is not JSON ({e})"
    end = max([v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"] or [0])
    if 8 + n + end != len(data):
        return f"{path}: data ends at {8 + n + end}, file has {len(data)} bytes"
    return ""


def token_dataset_problems(d: Path) -> list:
    """A token (or loss) dataset folder: nothing to read until manifest.json exists; then every shard it lists
    must exist with its recorded sha256."""
    d = Path(d)
    m = d / "manifest.json"
    if not m.exists():
        return []
    try:
        manifest = json.loads(m.read_text())
    except ValueError as e:
        return [f"{m}: not JSON ({e})"]
    out = []
    for s in manifest["shards"]:
        f = d / s["file"]
        if not f.exists() or sha(f) != s["sha256"]:
            out.append(f"{f}: missing or not the sha256 manifest.json gives")
    return out


def loss_records_problems(d: Path) -> list:
    """rho_score's per-shard records: a record that exists describes the bytes of its shard."""
    out = []
    for rec in sorted(Path(d).glob("losses-*.bin.json")):
        try:
            r = json.loads(rec.read_text())
        except ValueError as e:
            out.append(f"{rec}: not JSON ({e})")
            continue
        b = rec.with_suffix("")
        if not b.exists() or sha(b) != r["sha256"]:
            out.append(f"{b}: missing or not the sha256 its record gives")
    return out


def checkpoint_problems(out_dir: Path) -> list:
    """Every checkpoint directory latest_checkpoint could pick (step-*, not a temporary, with state.json) is
    complete: state.json parses and both tensor files have its sha256 and are whole safetensors files; the
    Hugging Face export, when present, is whole too."""
    out = []
    root = Path(out_dir) / "checkpoints"
    for c in sorted(root.glob("step-*")) if root.exists() else []:
        if ".tmp" in c.name or not (c / "state.json").exists():
            continue
        try:
            state = json.loads((c / "state.json").read_text())
        except ValueError as e:
            out.append(f"{c}/state.json: not JSON ({e})")
            continue
        for f in ("model.safetensors", "optimizer.safetensors"):
            p = c / f
            if not p.exists() or sha(p) != state["sha256"][f]:
                out.append(f"{p}: missing or not the sha256 state.json gives")
            elif safetensors_ok(p):
                out.append(safetensors_ok(p))
    hf = Path(out_dir) / "hf"
    if hf.exists():
        try:
            json.loads((hf / "config.json").read_text())
        except (OSError, ValueError) as e:
            out.append(f"{hf}/config.json: {e}")
        problem = safetensors_ok(hf / "model.safetensors") if (hf / "model.safetensors").exists() else \
            f"{hf}/model.safetensors: missing"
        if problem:
            out.append(problem)
    return out


def latest_checkpoint(out_dir: Path):
    """The directory librho's latest_checkpoint picks, or None."""
    root = Path(out_dir) / "checkpoints"
    found = [c for c in root.glob("step-*") if ".tmp" not in c.name and (c / "state.json").exists()] \
        if root.exists() else []
    return max(found) if found else None
