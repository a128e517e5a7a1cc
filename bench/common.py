"""Shared by the Python benchmark drivers: where the build is, loading librho's torch operators, timing on
CPU and CUDA, GPU peaks by device name, and the one JSON line each benchmark prints."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense bf16 tensor-core peak (FLOP/s, no sparsity) and memory bandwidth (B/s) by device name; --peak-* overrides.
GPU_PEAKS = [  # (substring of torch.cuda.get_device_name, bf16 FLOP/s, bytes/s), first match wins
    ("H100 PCIe", 756e12, 2.0e12),
    ("H100 NVL", 835e12, 3.9e12),
    ("H100", 989e12, 3.35e12),  # SXM (HBM3)
    ("H200", 989e12, 4.8e12),
    ("A100", 312e12, 2.039e12),
]


def gpu_peaks(device):
    """(bf16 FLOP/s, bytes/s) of the GPU, or (None, None) when it is not in the table (or not a GPU)."""
    if device != "cuda":
        return None, None
    name = torch.cuda.get_device_name()
    for key, flops, bw in GPU_PEAKS:
        if key in name:
            return flops, bw
    return None, None


def model_arguments():
    """The arguments every model benchmark takes: model shape, device, sequence length, batch, build folder."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-config", default=os.path.join(ROOT, "configs/model/tiny.yaml"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--build", default=None)
    return ap


def build_dir(arg=None):
    return os.path.abspath(arg or os.environ.get("RHO_BUILD_DIR") or os.path.join(ROOT, "build"))


def load_librho(build):
    """Makes torch.ops.rho.* available (librho.so registers them with TORCH_LIBRARY)."""
    torch.ops.load_library(os.path.join(build, "librho", "librho.so"))


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_it(fn, device, iters, warmup=1):
    """Median seconds of fn() over `iters` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def proc_status_bytes(field):
    """A field of /proc/self/status in bytes (VmRSS: resident now; VmHWM: peak resident)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024.0
    raise KeyError(field)


def run_json(cmd, env=None):
    """Runs a librho benchmark executable (with `env`'s variables added to this process's, when given) and returns
    the JSON object it prints last."""
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                         env=None if env is None else {**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_quiet(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def emit(obj):
    print(json.dumps(obj), flush=True)


def fail(obj, why):
    """Reports that the two sides computed different things, without timings, and exits non-zero."""
    obj["error"] = why
    emit(obj)
    sys.exit(1)


def write_token_dataset(out_dir, tokens, vocab_size, eos_id):
    """A token dataset (docs/data.md) of one uint16 shard holding `tokens` (a 1-D int tensor), as
    rho_tokenize would write it; the tokenizer fields are a stand-in (no text is involved)."""
    import hashlib
    os.makedirs(out_dir, exist_ok=True)
    data = tokens.to(torch.int32).numpy().astype("<u2").tobytes()
    with open(os.path.join(out_dir, "shard_00000.bin"), "wb") as f:
        f.write(data)
    n = tokens.numel()
    docs = int((tokens == eos_id).sum())
    manifest = {"format_version": 1, "dtype": "uint16", "vocab_size": vocab_size, "tokenizer_name": "bench.model",
                "tokenizer_sha256": "0" * 64, "bos_id": -1, "eos_id": eos_id, "num_tokens": n, "num_documents": docs,
                "skipped_documents": 0, "skipped_files": 0,
                "shards": [{"file": "shard_00000.bin", "num_tokens": n, "num_documents": docs,
                            "sha256": hashlib.sha256(data).hexdigest()}]}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)


def init_model(build, model_config, out_dir, seed=1):
    """A randomly initialised librho model saved in Hugging Face layout (fp32), which transformers loads."""
    run_quiet([os.path.join(build, "apps", "rho_model"), "init", model_config, "--seed", str(seed), "--out", out_dir])
    with open(os.path.join(out_dir, "config.json")) as f:
        return json.load(f)


def hf_model(hf_dir, device, dtype):
    """The same weights as a transformers LlamaForCausalLM with SDPA attention (import transformers before
    measuring memory: the import alone takes a few hundred MB)."""
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(hf_dir, dtype=dtype, attn_implementation="sdpa").to(device)


class Peak:
    """Peak memory from construction on, over what was in use then: the CUDA allocator's peak, or on CPU the
    peak resident set (Linux resets it to the current one on "5" written to clear_refs)."""

    def __init__(self, device):
        self.device = device
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = proc_status_bytes("VmRSS")

    def bytes(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return proc_status_bytes("VmHWM") - self.base
