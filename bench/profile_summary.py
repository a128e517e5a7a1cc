"""Reads Chrome traces written by the benchmarks' --profile options (Kineto: CPU operators and, on CUDA, kernels,
copies and runtime calls) and prints, per trace: GPU busy time and the span it covers, the top kernels by GPU time,
the device-to-host copies and the host synchronisations (cudaStreamSynchronize, cudaDeviceSynchronize,
cudaEventSynchronize, and blocking cudaMemcpy), the top CPU operators by their own time, and the kernel time by
the operator that launched it (gpu_ms_by_operator: matrix products and attention apart, the rest by the innermost
aten:: operator and the autograd node or librho function around it), which says what a fused kernel would save.
One JSON line per trace, then a readable table. Traces may be gzipped (.json.gz).

    python bench/profile_summary.py trace.json [more.json.gz ...] [--top 15]
"""
import argparse
import collections
import gzip
import json
import os

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_mm", "aten::matmul")
MATMUL_KERNELS = ("gemm", "nvjet", "cutlass", "xmma", "splitKreduce")
ATTENTION_KERNELS = ("sdpa", "flash", "fmha", "attention")


def launching_operators(events):
    """For each kernel launch (by correlation id), the names of the CPU operators open around it, outermost first:
    a sweep over each thread's operators, which nest."""
    launches = collections.defaultdict(list)
    for e in events:
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {}):
            launches[e.get("tid")].append(e)
    ops = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op":
            ops[e.get("tid")].append(e)
    around = {}
    for tid, calls in launches.items():
        mine = sorted(ops[tid], key=lambda o: (o["ts"], -float(o.get("dur", 0))))
        stack, i = [], 0
        for call in sorted(calls, key=lambda c: c["ts"]):
            while i < len(mine) and mine[i]["ts"] <= call["ts"]:
                stack.append(mine[i])
                i += 1
            stack = [o for o in stack if o["ts"] + float(o.get("dur", 0)) >= call["ts"]]
            around[call["args"]["correlation"]] = [o["name"] for o in stack]
    return around


def kernel_time_by_operator(events, top):
    """Kernel milliseconds by what launched them: matrix products (cuBLAS kernels, or launched by a matrix-product
    operator), attention (launched by an attention operator, or named so), and every other kernel by (scope,
    operator): the innermost aten:: operator and the innermost enclosing scope that is not one (an autograd node
    in the backward, a librho function), "-" where there is none."""
    around = launching_operators(events)
    groups, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") != "kernel":
            continue
        names = around.get(e.get("args", {}).get("correlation"), [])
        aten = [n for n in names if n.startswith("aten::")]
        inner = aten[-1] if aten else "-"
        if any("attention" in n for n in aten) or any(k in e["name"].lower() for k in ATTENTION_KERNELS):
            key = ("attention", "")  # first: the memory-efficient kernels are CUTLASS ones
        elif any(k in e["name"] for k in MATMUL_KERNELS) or any(n in MATMUL_OPS for n in aten):
            key = ("matrix products", "")
        else:
            scopes = [n for n in names if not n.startswith("aten::")]
            key = (scopes[-1] if scopes else "-", inner)
        groups[key] += float(e.get("dur", 0))
        calls[key] += 1
    return [{"scope": k[0][:100], "op": k[1], "ms": round(v / 1e3, 3), "calls": calls[k]}
            for k, v in groups.most_common(top)]


def summarize(path, top):
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
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
        "gpu_ms_by_operator": kernel_time_by_operator(events, top),
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
        if s["gpu_ms_by_operator"]:
            print("  kernel time by launching operator (scope | operator):")
        for g in s["gpu_ms_by_operator"]:
            print(f"  {g['ms']:9.3f} ms  {g['calls']:5d}x  {g['scope']}" + (f" | {g['op']}" if g["op"] else ""))


if __name__ == "__main__":
    main()
