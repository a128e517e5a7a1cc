"""Reads Chrome traces written by the benchmarks' --profile options (Kineto: CPU operators and, on CUDA, kernels,
copies and runtime calls) and prints, per trace: GPU busy time and the span it covers, the top kernels by GPU time,
the device-to-host copies and the host synchronisations (cudaStreamSynchronize, cudaDeviceSynchronize,
cudaEventSynchronize, and blocking cudaMemcpy), and the top CPU operators by their own time. One JSON line per
trace, then a readable table.

    python bench/profile_summary.py trace.json [more.json ...] [--top 15]
"""
import argparse
import collections
import json
import os

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def summarize(path, top):
    with open(path) as f:
        trace = json.load(f)
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    kernels = collections.Counter()
    kernel_n = collections.Counter()
    copies = collections.Counter()
    syncs = collections.Counter()
    cpu_ops = collections.Counter()
    cpu_calls = collections.Counter()
    gpu_busy = 0.0
    gpu_start, gpu_end = float("inf"), 0.0
    for e in events:
        cat, name, dur = e.get("cat", ""), e.get("name", ""), float(e.get("dur", 0))
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            gpu_busy += dur
            gpu_start, gpu_end = min(gpu_start, e["ts"]), max(gpu_end, e["ts"] + dur)
        if cat == "kernel":
            kernels[name] += dur
            kernel_n[name] += 1
        elif cat == "gpu_memcpy":
            copies[name] += 1
        elif cat == "cuda_runtime" and (name in SYNC_CALLS or name.rstrip("_v2") in SYNC_CALLS):
            syncs[name] += 1
        elif cat == "cpu_op":
            cpu_ops[name] += dur
            cpu_calls[name] += 1
    out = {
        "trace": os.path.basename(path),
        "gpu_busy_ms": round(gpu_busy / 1e3, 3),
        "gpu_span_ms": round((gpu_end - gpu_start) / 1e3, 3) if gpu_end else None,
        "kernel_launches": sum(kernel_n.values()),
        "copies": dict(copies),
        "host_syncs": dict(syncs),
        # a tensor's value read by the host (.item(), a scalar's copy out): a synchronisation on a GPU
        "local_scalar_reads": cpu_calls["aten::_local_scalar_dense"],
        "top_kernels": [{"name": k[:120], "ms": round(v / 1e3, 3), "calls": kernel_n[k],
                         "share": round(v / gpu_busy, 4) if gpu_busy else None} for k, v in kernels.most_common(top)],
        "top_cpu_ops_inclusive": [{"name": k, "ms": round(v / 1e3, 3)} for k, v in cpu_ops.most_common(top)],
    }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    for p in a.traces:
        if not os.path.exists(p):
            print(json.dumps({"trace": os.path.basename(p), "error": "missing"}))
            continue
        s = summarize(p, a.top)
        print(json.dumps(s))
        print(f"\n== {s['trace']}: GPU busy {s['gpu_busy_ms']} ms over a span of {s['gpu_span_ms']} ms, "
              f"{s['kernel_launches']} kernels; copies {s['copies']}; host syncs {s['host_syncs']}; "
              f"scalar reads {s['local_scalar_reads']}")
        for k in s["top_kernels"]:
            print(f"  {k['ms']:9.3f} ms  {k['calls']:5d}x  {100 * (k['share'] or 0):5.1f}%  {k['name']}")


if __name__ == "__main__":
    main()
