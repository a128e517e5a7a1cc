"""Scoring: librho's TokenScorer against Hugging Face transformers on the same model shape and weights, the
same windows (seq_len + 1 tokens, stride seq_len) and batch. transformers runs as a Python user would: SDPA
attention, logits of the whole batch, then per-token cross-entropy in fp32. librho runs bench_score (TokenScorer set up as rho_score does), once per --precisions value, each against
transformers under the same recipe (bf16: bf16 weights; autocast: fp32 weights under torch.autocast; fp32).
Per-token losses are compared before any figure is reported. Peak memory includes the weights. One JSON line per precision.

    python bench/bench_score.py [--model-config configs/model/tiny.yaml] [--device cpu|cuda] [--seq 256]
                                [--batch 8] [--windows 32] [--precisions auto] [--profile-dir D]
GPU target (H100, TinyLlama-1.1B, seq 2048): librho >= 2x transformers' tokens/s at <= half its peak memory.
"""
import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import common


def resolve_precision(p, device):
    return ("autocast" if device == "cuda" else "fp32") if p == "auto" else p


def hf_side(hf_dir, data_tokens, a, device):
    """transformers' losses (position p's loss at p - 1) and tokens/s under the recipe --hf-precision names (bf16:
    bf16 weights; autocast: fp32 weights under torch.autocast bf16; fp32); run in its own process for the peak."""
    import contextlib

    import transformers  # noqa: F401  (its import is not part of the measured peak)
    dtype = torch.bfloat16 if a.hf_precision == "bf16" else torch.float32
    peak = common.Peak(device)
    model = common.hf_model(hf_dir, device, dtype).eval()
    autocast = torch.autocast(device, dtype=torch.bfloat16) if a.hf_precision == "autocast" else contextlib.nullcontext()
    T, B = a.seq, a.batch
    windows = torch.stack([data_tokens[k * T:k * T + T + 1] for k in range(a.windows)])

    def score(rows):
        out = []
        with torch.inference_mode(), autocast:
            for i in range(0, rows.size(0), B):
                w = rows[i:i + B].to(device)
                logits = model(w[:, :-1]).logits
                out.append(F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1),
                                           reduction="none").cpu())
        return torch.cat(out)

    score(windows[:B])  # warm-up, as on the librho side
    common.sync(device)
    t0 = time.perf_counter()
    losses = score(windows)
    common.sync(device)
    secs = time.perf_counter() - t0
    return losses, {"tokens_per_s": losses.numel() / secs, "seconds": secs, "peak_bytes": peak.bytes()}


def main():
    ap = common.model_arguments()
    ap.add_argument("--windows", type=int, default=32, help="windows scored in the timed run")
    ap.add_argument("--precisions", default="auto",
                    help="librho's --precision values to run, comma-separated (auto, autocast, bf16, fp32)")
    ap.add_argument("--profile-dir", help="write a Chrome trace of one librho scoring batch there "
                                          "(score_<precision>.json)")
    ap.add_argument("--hf-side", help=argparse.SUPPRESS)
    ap.add_argument("--hf-precision", default="fp32", help=argparse.SUPPRESS)  # internal: run transformers' side in this process
    a = ap.parse_args()
    dev = a.device
    if a.hf_side:
        work = a.hf_side
        tokens = torch.load(os.path.join(work, "tokens.pt"))
        losses, res = hf_side(os.path.join(work, "hf"), tokens, a, dev)
        torch.save(losses, os.path.join(work, "hf_losses.pt"))
        common.emit(res)
        return
    build = common.build_dir(a.build)
    with tempfile.TemporaryDirectory() as work:
        cfg = common.init_model(build, a.model_config, os.path.join(work, "hf"))
        vocab = cfg["vocab_size"]
        n = a.windows * a.seq + 1
        tokens = torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(0))
        torch.save(tokens, os.path.join(work, "tokens.pt"))
        common.write_token_dataset(os.path.join(work, "data"), tokens, vocab, eos_id=2)
        rho, rho_losses = {}, {}
        for prec in a.precisions.split(","):
            prof = ["--profile", os.path.join(a.profile_dir, f"score_{prec}.json")] if a.profile_dir else []
            rho[prec] = common.run_json([os.path.join(build, "bench", "bench_score"), "--model",
                                         os.path.join(work, "hf"), "--data", os.path.join(work, "data"), "--out",
                                         os.path.join(work, "rho.f32"), "--seq", str(a.seq), "--batch", str(a.batch),
                                         "--device", dev, "--precision", prec, *prof])
            rho_losses[prec] = torch.from_file(os.path.join(work, "rho.f32"), size=n, dtype=torch.float32)[1:]
        # transformers under the same recipe as each librho run: the losses must agree, and the speed and memory
        # are compared like for like.
        hf, hf_losses = {}, {}
        for prec in {resolve_precision(p, dev) for p in rho}:
            hf[prec] = common.run_json([sys.executable, __file__, "--hf-side", work, "--hf-precision", prec, "--device",
                                        dev, "--seq", str(a.seq), "--batch", str(a.batch), "--windows", str(a.windows)])
            hf_losses[prec] = torch.load(os.path.join(work, "hf_losses.pt"))
    failed = False
    for prec, r in rho.items():
        rp = resolve_precision(prec, dev)
        out = {"bench": "score", "device": dev, "gpu": torch.cuda.get_device_name() if dev == "cuda" else None,
               "threads": torch.get_num_threads(),
               "model_config": os.path.relpath(a.model_config, common.ROOT), "seq": a.seq, "batch": a.batch,
               "tokens": r["tokens"], "precision": r["precision"]}
        diff = (rho_losses[prec] - hf_losses[rp]).abs()
        out["loss_max_abs_diff"], out["loss_mean_abs_diff"] = diff.max().item(), diff.mean().item()
        # bf16 logits round differently in two GEMM libraries' tilings; fp32 agrees to float noise.
        low = rp in ("autocast", "bf16")
        ok = diff.mean().item() < (2e-2 if low else 1e-5) and diff.max().item() < (0.5 if low else 1e-3)
        if not ok or rho_losses[prec].numel() != hf_losses[rp].numel():
            out["error"] = "per-token losses differ between librho and transformers"
            common.emit(out)
            failed = True
            continue
        h = hf[rp]
        out.update({"rho_tokens_per_s": round(r["tokens_per_s"], 1), "hf_tokens_per_s": round(h["tokens_per_s"], 1),
                    "speedup": round(r["tokens_per_s"] / h["tokens_per_s"], 3),
                    "rho_peak_bytes": r["peak_bytes"], "hf_peak_bytes": h["peak_bytes"],
                    "memory_ratio": round(r["peak_bytes"] / h["peak_bytes"], 3)})
        common.emit(out)
    if failed:
        sys.exit(1)

if __name__ == "__main__":
    main()
