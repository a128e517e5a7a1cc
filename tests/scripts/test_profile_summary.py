#!/usr/bin/env python3
"""bench/profile_summary.py (the GPU kit's `profile` part): kernel time grouped by the operator that launched it, on a
made-up trace whose answer is known, and on the training step's H200 trace kept in bench/results (gzipped): every
kernel lands in one group, and the groups add up to the kernels' total.

    test_profile_summary.py
"""
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(Path(__file__).parent))
import profile_summary  # noqa: E402
from cli_helpers import Checks  # noqa: E402


def op(name, ts, dur, tid=1):
    return {"ph": "X", "cat": "cpu_op", "name": name, "tid": tid, "ts": ts, "dur": dur}


def launch(correlation, ts, cat="cuda_runtime", tid=1):
    return {"ph": "X", "cat": cat, "name": "cudaLaunchKernel", "tid": tid, "ts": ts, "dur": 1,
            "args": {"correlation": correlation}}


def kernel(name, correlation, dur):
    return {"ph": "X", "cat": "kernel", "name": name, "tid": 7, "ts": 1000 + correlation, "dur": dur,
            "args": {"correlation": correlation}}


def main():
    check = Checks()
    # A linear's GEMM (named after no library: found through aten::mm), two multiplications in an autograd node's
    # backward (thread 2), one outside any node, a cuDNN attention kernel launched through the driver, and a kernel
    # whose launch is not in the trace.
    ev = [op("aten::linear", 0, 100), op("aten::mm", 10, 50), launch(1, 20),
          op("MulBackward0", 200, 100, tid=2), op("aten::mul", 210, 20, tid=2), launch(2, 215, tid=2),
          op("aten::mul", 240, 20, tid=2), launch(3, 245, tid=2),
          op("aten::mul", 400, 10), launch(4, 405),
          op("aten::_scaled_dot_product_cudnn_attention", 500, 50), launch(5, 510, cat="cuda_driver"),
          kernel("some_matrix_kernel", 1, 30), kernel("elementwise_kernel<mul>", 2, 4),
          kernel("elementwise_kernel<mul>", 3, 6), kernel("elementwise_kernel<mul>", 4, 5),
          kernel("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", 5, 40), kernel("memset_like", 9, 2)]
    got = {(g["scope"], g["op"]): (g["ms"], g["calls"]) for g in profile_summary.kernel_time_by_operator(ev, 10)}
    want = {("matrix products", ""): (0.03, 1), ("MulBackward0", "aten::mul"): (0.01, 2),
            ("-", "aten::mul"): (0.005, 1), ("attention", ""): (0.04, 1), ("-", "-"): (0.002, 1)}
    check(got == want, f"made-up trace grouped by launching operator: {got}")

    with tempfile.TemporaryDirectory() as tmp:  # a plain .json reads as the .gz does
        path = Path(tmp) / "t.json"
        path.write_text(json.dumps({"traceEvents": ev}))
        s = profile_summary.summarize(str(path), 10)
        check(s["kernel_launches"] == 6 and len(s["gpu_ms_by_operator"]) == 5, f"summary of the made-up trace: {s}")

    trace = ROOT / "bench" / "results" / "2026-11-27-h200" / "trace_train_slm.json.gz"
    s = profile_summary.summarize(str(trace), 1000)
    groups = s["gpu_ms_by_operator"]
    grouped_ms, grouped_calls = sum(g["ms"] for g in groups), sum(g["calls"] for g in groups)
    kernels_ms = sum(k["ms"] for k in s["top_kernels"])
    check(grouped_calls == s["kernel_launches"] and abs(grouped_ms - kernels_ms) < 0.01 * len(groups),
          f"H200 training step: {grouped_calls} kernels in {len(groups)} groups, {grouped_ms:.3f} ms "
          f"against {s['kernel_launches']} kernels, {kernels_ms:.3f} ms")
    by = {g["scope"]: g["ms"] for g in groups}
    check(by.get("matrix products", 0) > 0.4 * grouped_ms and by.get("attention", 0) > 0,
          f"matrix products {by.get('matrix products')} ms and attention {by.get('attention')} ms of {grouped_ms:.1f}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
