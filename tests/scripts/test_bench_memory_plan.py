#!/usr/bin/env python3
"""bench/bench_memory_plan.py (the GPU kit's `memory_plan` part) on the CPU: one row per setting, the plan within
20% of the first step's measured peak (ctest dist_cpu holds the plan to 10% at its own shapes), each run's time
on stderr; a setting rho_pretrain refuses gives a row with rho_pretrain's error and exit 1.

    test_bench_memory_plan.py --build BUILD
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import Checks  # noqa: E402


def bench(build, settings):
    r = subprocess.run([sys.executable, ROOT / "bench" / "bench_memory_plan.py", "--device", "cpu", "--model-config",
                        ROOT / "configs" / "model" / "tiny.yaml", "--seq", "64", "--batch", "2", "--build", build,
                        "--settings", settings, "--run-limit", "120"], capture_output=True, text=True, timeout=600)
    return r, [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    build = ap.parse_args().build
    check = Checks()

    r, rows = bench(build, "none,parameters+ac")
    check(r.returncode == 0 and [x["setting"] for x in rows] == ["none", "parameters+ac"],
          f"two rows, exit {r.returncode}: {[x.get('setting') for x in rows]} {r.stderr.strip()[-300:]}")
    for x in rows:
        check("error" not in x and 0.8 <= x.get("ratio", 0) <= 1.2,
              f"{x['setting']}: planned {x.get('planned_bytes')} bytes, measured {x.get('measured_bytes')}, "
              f"ratio {x.get('ratio')} {x.get('error', '')}")
    check(r.stderr.count("to the first step's memory line") == 2, "each run's time on stderr")

    r, rows = bench(build, "bogus")
    check(r.returncode == 1 and len(rows) == 1 and "bogus" in rows[0].get("error", ""),
          f"a sharding level rho_pretrain refuses: exit {r.returncode}, {rows}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
