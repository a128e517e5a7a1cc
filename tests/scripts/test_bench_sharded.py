#!/usr/bin/env python3
"""bench/bench_sharded.py (the GPU kit's `sharded` part) on the CPU: its three runs finish, the group run goes
through Gloo with one rank, the layer gathers are counted as planned (configs/model/tiny.yaml: 2 layers, so 3
gathers a micro-batch, 2 of them prefetched); and its trace reader on a made-up trace: the work off the compute
stream, and the part of it the compute stream's kernels overlapped.

    test_bench_sharded.py --build BUILD
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(Path(__file__).parent))
import bench_sharded  # noqa: E402
from cli_helpers import Checks  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    build = ap.parse_args().build
    check = Checks()

    with tempfile.TemporaryDirectory() as tmp:
        # A made-up trace: compute kernels on stream 7 at [0, 10) and [20, 30); off it a copy at [5, 15) (half
        # overlapped), a kernel at [22, 26) (whole) and a memset at [40, 42) (none).
        ev = [{"ph": "X", "cat": "kernel", "name": "gemm", "tid": 7, "ts": 0, "dur": 10},
              {"ph": "X", "cat": "kernel", "name": "gemm", "tid": 7, "ts": 20, "dur": 10},
              {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoD", "tid": 21, "ts": 5, "dur": 10},
              {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_ReduceScatter(x)", "tid": 21, "ts": 22, "dur": 4},
              {"ph": "X", "cat": "gpu_memset", "name": "Memset", "tid": 21, "ts": 40, "dur": 2},
              {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "tid": 1, "ts": 0, "dur": 50}]
        trace = Path(tmp) / "trace.json"
        trace.write_text(json.dumps({"traceEvents": ev}))
        got = bench_sharded.stream_overlap(trace)
        check(got["events"] == 3 and got["ms"] == 0.016 and got["overlapped_fraction"] == 0.5625,
              f"trace reader: 3 events off the compute stream, 16 us, 9 of them overlapped: {got}")
        (Path(tmp) / "cpu.json").write_text(json.dumps({"traceEvents": ev[-1:]}))
        check(bench_sharded.stream_overlap(Path(tmp) / "cpu.json") is None, "a trace without kernels: None")

        r = subprocess.run([sys.executable, ROOT / "bench" / "bench_sharded.py", "--model-config",
                            ROOT / "configs" / "model" / "tiny.yaml", "--seq", "64", "--batch", "2", "--warmup", "1",
                            "--steps", "1", "--build", build, "--profile-dir", Path(tmp) / "prof"],
                           capture_output=True, text=True, timeout=600)
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        if any("built without gloo" in x.get("error", "") for x in rows):
            print("SKIPPED: this librho has no Gloo backend (install libgloo-dev and rebuild)")
            return 77
        check(r.returncode == 0 and [x["run"] for x in rows] == ["none", "parameters", "group"],
              f"three runs, exit {r.returncode}: {[x.get('run') for x in rows]} {r.stderr.strip()[-300:]}")
        if len(rows) == 3:
            g = rows[2]
            check(g["backend"] == "gloo" and rows[1]["backend"] == "none" and g["side_streams"] is None,
                  f"the group run through {g['backend']}, the others without a group; no GPU streams on the CPU")
            want = {"issued": 3, "prefetched": 2}
            check(all({k: x["gathers"][k] for k in want} == want for x in rows[1:]) and rows[0]["gathers"] is None,
                  f"layer gathers {[x['gathers'] for x in rows]}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
