"""rho::topk_mask against what Python code would do instead: torch.topk then scatter into a mask, and
torch.kthvalue then compare. Scores are uniform random (continuous), k = ratio x n (SLM keeps 60% by default).
Before timing, every mask is checked: exactly k kept, every score above the k-th largest kept and every score
below it dropped (with bf16 there are ties at the threshold: topk keeps an arbitrary k of them, kthvalue-compare
keeps all of them, which the check allows and the output counts). Effective bandwidth = (scores read once + mask
written once) / time, against the GPU's peak (from its name, or --peak-bw in GB/s).

    python bench/bench_topk.py [--device cpu|cuda] [--sizes 1M,4M,16M] [--dtypes fp32,bf16] [--ratio 0.6]
"""
import argparse

import torch

import common


def size(s):
    return int(float(s[:-1]) * (1 << 20)) if s[-1] in "Mm" else int(s)


def check(name, x, mask, k, exact):
    """Raises unless `mask` keeps the top k of x (ties at the threshold: exactly k if `exact`, else any)."""
    thr = torch.kthvalue(x.float().cpu(), x.numel() - k + 1).values.item()
    xc, mc = x.float().cpu(), mask.cpu()
    count = int(mc.sum())
    if exact and count != k:
        raise AssertionError(f"{name}: kept {count}, expected {k}")
    if bool((xc > thr)[~mc].any()) or bool(mc[xc < thr].any()):
        raise AssertionError(f"{name}: keeps a score below, or drops one above, the k-th largest")
    return count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="1M,4M,16M")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--ratio", type=float, default=0.6)
    ap.add_argument("--iters", type=int, default=0, help="timed runs (default 3 on CPU, 20 on CUDA)")
    ap.add_argument("--peak-bw", type=float, default=0, help="GPU memory bandwidth in GB/s (default: by name)")
    ap.add_argument("--build", default=None)
    a = ap.parse_args()
    common.load_librho(common.build_dir(a.build))
    dev = a.device
    iters = a.iters or (20 if dev == "cuda" else 3)
    peak_bw = a.peak_bw * 1e9 if a.peak_bw else common.gpu_peaks(dev)[1]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    gen = torch.Generator().manual_seed(0)
    for n in map(size, a.sizes.split(",")):
        for dname in a.dtypes.split(","):
            dt = dtypes[dname]
            x = torch.rand(n, generator=gen).to(dev, dt)
            k = int(a.ratio * n)

            def rho():
                return torch.ops.rho.topk_mask(x, k)[0]

            def topk_scatter():
                m = torch.zeros(n, dtype=torch.bool, device=dev)
                return m.scatter_(0, torch.topk(x, k, sorted=False).indices, True)

            def kthvalue_compare():
                return x >= torch.kthvalue(x, n - k + 1).values

            out = {"bench": "topk_mask", "device": dev, "gpu": torch.cuda.get_device_name() if dev == "cuda" else None,
                   "threads": torch.get_num_threads(), "n": n, "dtype": dname, "k": k, "iters": iters}
            try:
                check("rho", x, rho(), k, True)
                check("topk_scatter", x, topk_scatter(), k, True)
                out["kthvalue_kept"] = check("kthvalue_compare", x, kthvalue_compare(), k, False)
            except AssertionError as e:
                common.fail(out, str(e))
            moved = n * x.element_size() + n  # scores read + bool mask written
            for name, fn in [("rho", rho), ("topk_scatter", topk_scatter), ("kthvalue_compare", kthvalue_compare)]:
                t = common.time_it(fn, dev, iters)
                out[f"{name}_ms"] = round(t * 1e3, 4)
                out[f"{name}_GBps"] = round(moved / t / 1e9, 2)
            out["speedup_vs_topk_scatter"] = round(out["topk_scatter_ms"] / out["rho_ms"], 2)
            out["speedup_vs_kthvalue_compare"] = round(out["kthvalue_compare_ms"] / out["rho_ms"], 2)
            out["rho_fraction_of_peak_bw"] = round(moved / (out["rho_ms"] / 1e3) / peak_bw, 3) if peak_bw else None
            common.emit(out)


if __name__ == "__main__":
    main()
