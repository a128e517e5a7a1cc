"""Shared by the Python benchmark drivers: where the build is, loading librho's torch operators, timing on
CPU and CUDA, GPU peaks by device name, and the one JSON line each benchmark prints."""
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


def peak_rss_bytes():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def run_json(cmd):
    """Runs a librho benchmark executable and returns the JSON object it prints last."""
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def emit(obj):
    print(json.dumps(obj), flush=True)


def fail(obj, why):
    """Reports that the two sides computed different things, without timings, and exits non-zero."""
    obj["error"] = why
    emit(obj)
    sys.exit(1)
