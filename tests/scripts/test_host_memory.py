"""Host memory (librho/util/host_memory.h): the tools that run a model keep freed CPU tensor memory for the next
step, so a CPU training or scoring loop stops faulting the same pages in at every step. Measured as the minor page
faults a run's extra steps add (the child's rusage, runs of two lengths): with the tools' malloc settings, next to
none per step; with the user's own malloc settings in the environment (here GLIBC_TUNABLES naming a glibc.malloc
tunable at its default value, which leaves glibc's defaults in force and the tools' settings off), many. Skipped
(77) where malloc is not glibc's.

  test_host_memory.py --bin BUILD/apps
"""
import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_helpers import Checks, tiny_tokens_and_model  # noqa: E402

SHORT, LONG = 10, 40  # steps of the two runs


def minor_faults(cmd, env):
    """The minor page faults of one run of cmd (it must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    r = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}")
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before


def faults_per_step(tools, t, env, name):
    """Minor faults per training step beyond the first SHORT (CLM, tiny model, CPU, one thread)."""
    counts = []
    for steps in (SHORT, LONG):
        out = t / f"{name}-{steps}"
        counts.append(minor_faults([tools / "rho_pretrain", t / "run.yaml", "--set", f"run.out_dir={out}",
                                    "--set", f"optim.max_steps={steps}"], env))
    return (counts[1] - counts[0]) / (LONG - SHORT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, type=Path)
    tools = ap.parse_args().bin
    if platform.libc_ver()[0] != "glibc":
        print("SKIP: malloc is not glibc's here")
        sys.exit(77)
    check = Checks()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    base["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        tiny_tokens_and_model(tools, t)
        (t / "run.yaml").write_text(f"""run: {{device: cpu, seed: 0}}
model: {{config: {t / 'm.yaml'}}}
data: {{train: {t / 'tok'}, seq_len: 64, batch_size: 32}}
optim: {{warmup_steps: 2}}
train: {{checkpoint_every: 1000, export_hf: false, tensorboard: false, log_every: 1000}}
""")
        kept = faults_per_step(tools, t, base, "kept")
        default = faults_per_step(tools, t, {**base, "GLIBC_TUNABLES": "glibc.malloc.perturb=0"}, "default")
        check(kept < 32, f"rho_pretrain on the CPU: {kept:.1f} minor page faults per step beyond the first {SHORT} "
                           f"(with glibc's defaults: {default:.1f})")
        check(default > 4 * max(kept, 32), f"malloc settings given in the environment win over the tools': "
                                             f"{default:.1f} faults per step with them")
    print("PASS" if check.ok else "FAIL")
    sys.exit(0 if check.ok else 1)


if __name__ == "__main__":
    main()
