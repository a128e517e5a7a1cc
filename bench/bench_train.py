"""Training: one optimizer step of librho (rho_pretrain's Trainer, SLM and CLM) against the equivalent Python
step (transformers LlamaForCausalLM with SDPA, bf16 autocast on CUDA / fp32 on CPU, logits then cross-entropy,
gradient clipping, torch.optim.AdamW(fused=True)), same model shape, initial weights, batch and sequence length.

The token stream repeats one random window, so every window the loader hands out is the same and both sides
train on the same batch whatever the order. Before timing, the first step's loss (at the initial weights) must
agree between transformers, librho CLM and librho SLM (loss over all tokens). SLM reads reference losses made by
rho_score with the same model (rule excess, ratio 0.6, scope micro_batch: selection from the training forward).

MFU = tokens/s x FLOPs per token / the GPU's dense bf16 peak, FLOPs per token = 6 x (parameters in matmuls:
all but the input embedding, unless tied) + 12 x layers x heads x head_dim x seq (attention scores and values,
forward and backward, PaLM's convention without the causal halving). CPU: tokens/s only (MFU null). Peak memory
counts weights, gradients, optimizer state and activations. One JSON line.

    python bench/bench_train.py [--model-config configs/model/tiny.yaml] [--device cpu|cuda] [--seq 256]
                                [--batch 8] [--warmup 2] [--steps 5] [--peak-tflops T] [--profile-dir D]
                                [--accum 1] [--slm-scopes micro_batch[,step,...]]
GPU targets (H100, TinyLlama-1.1B, bf16, seq 2048): >= 50% MFU, >= 1.3x the Python step's tokens/s, SLM step
time within 3% of CLM's.
"""
import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import common


def python_step(hf_dir, window, a, device):
    """The transformers training step: first loss, seconds per step, peak memory."""
    import transformers  # noqa: F401  (its import is not part of the measured peak)
    peak = common.Peak(device)
    model = common.hf_model(hf_dir, device, torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    batch = window.unsqueeze(0).expand(a.batch, -1).contiguous()
    if device == "cuda":
        batch = batch.pin_memory()

    def step():
        b = batch.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(b[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    first = step().item()
    for _ in range(a.warmup - 1):
        step()
    common.sync(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    common.sync(device)
    secs = (time.perf_counter() - t0) / a.steps
    return {"first_loss_all": first, "step_seconds": secs, "tokens_per_s": a.batch * a.seq / secs,
            "peak_bytes": peak.bytes()}


def train_yaml(work, name, stage, scope, a, device):
    return f"""run: {{out_dir: {work}/run_{name}, seed: 0, device: {device}}}
model: {{init_from: {work}/hf}}
data: {{train: {work}/data, seq_len: {a.seq}, batch_size: {a.batch}, grad_accum: {a.accum}, exclude_boundary: false}}
optim: {{lr: 3.0e-4, min_lr: 3.0e-5, warmup_steps: 10, max_steps: 100000, weight_decay: 0.1}}
train: {{stage: {stage}, log_every: 1000000, checkpoint_every: 1000000, export_hf: false}}
slm: {{ratio: 0.6, rule: excess, scope: {scope}, reference_losses: {work}/losses}}
"""


def main():
    ap = common.model_arguments()
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=0, help="dense bf16 peak (default: by GPU name)")
    ap.add_argument("--accum", type=int, default=1, help="librho's micro-batches per optimizer step")
    ap.add_argument("--slm-scopes", default="micro_batch",
                    help="SLM selection scopes to time, comma-separated; the first is reported as rho_slm_*, "
                         "the others as rho_slm_<scope>_* (step and global score every micro-batch once more "
                         "when accum > 1)")
    ap.add_argument("--profile-dir", help="write a Chrome trace of one more librho step per stage there "
                                          "(train_clm.json, train_slm.json; bench/profile_summary.py reads them)")
    ap.add_argument("--python-side", help=argparse.SUPPRESS)  # internal: the transformers step in this process
    a = ap.parse_args()
    dev = a.device
    if a.python_side:
        window = torch.load(os.path.join(a.python_side, "window.pt"))
        common.emit(python_step(os.path.join(a.python_side, "hf"), window, a, dev))
        return
    build = common.build_dir(a.build)
    with tempfile.TemporaryDirectory() as work:
        cfg = common.init_model(build, a.model_config, os.path.join(work, "hf"))
        window = torch.randint(3, cfg["vocab_size"], (a.seq + 1,), generator=torch.Generator().manual_seed(0))
        window[-1] = window[0]  # the stream repeats window[:-1]; each window ends where the next begins
        torch.save(window, os.path.join(work, "window.pt"))
        stream = torch.cat([window[:-1].repeat(a.batch), window[:1]])
        common.write_token_dataset(os.path.join(work, "data"), stream, cfg["vocab_size"], eos_id=2)
        common.run_quiet([os.path.join(build, "apps", "rho_score"), "--model", os.path.join(work, "hf"),
                          "--data", os.path.join(work, "data"), "--out", os.path.join(work, "losses"),
                          "--seq-len", str(a.seq), "--batch-size", str(a.batch), "--device", dev])
        rho = {}
        scopes = a.slm_scopes.split(",")
        runs = [("clm", "clm", "micro_batch"), ("slm", "slm", scopes[0])] + [(f"slm_{s}", "slm", s) for s in scopes[1:]]
        for name, stage, scope in runs:
            path = os.path.join(work, f"{name}.yaml")
            with open(path, "w") as f:
                f.write(train_yaml(work, name, stage, scope, a, dev))
            prof = ["--profile", os.path.join(a.profile_dir, f"train_{name}.json")] if a.profile_dir else []
            rho[name] = common.run_json([os.path.join(build, "bench", "bench_train"), "--config", path,
                                         "--warmup", str(a.warmup), "--steps", str(a.steps), *prof])
        py = common.run_json([sys.executable, __file__, "--python-side", work, "--device", dev, "--seq", str(a.seq),
                              "--batch", str(a.batch), "--warmup", str(a.warmup), "--steps", str(a.steps)])
    out = {"bench": "train", "device": dev, "gpu": torch.cuda.get_device_name() if dev == "cuda" else None,
           "threads": torch.get_num_threads(),
           "model_config": os.path.relpath(a.model_config, common.ROOT), "seq": a.seq, "batch": a.batch,
           "steps": a.steps, "accum": a.accum, "slm_scope": scopes[0],
           "precision": "bf16 autocast" if dev == "cuda" else "fp32",
           "first_loss": {"python": py["first_loss_all"], "clm": rho["clm"]["first_loss_all"],
                          "slm": rho["slm"]["first_loss_all"]}}
    tol = 2e-2 if dev == "cuda" else 1e-4
    ref = py["first_loss_all"]
    if any(abs(rho[s]["first_loss_all"] - ref) > tol * abs(ref) for s in rho):
        common.fail(out, "first-step losses differ between librho and transformers")
    params = rho["clm"]["parameters"]
    embed = cfg["vocab_size"] * cfg["hidden_size"]
    matmul_params = params - (0 if cfg.get("tie_word_embeddings") else embed)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    flops_per_token = 6 * matmul_params + 12 * cfg["num_hidden_layers"] * cfg["num_attention_heads"] * head_dim * a.seq
    peak = a.peak_tflops * 1e12 if a.peak_tflops else common.gpu_peaks(dev)[0]

    def mfu(tps):
        return round(tps * flops_per_token / peak, 4) if peak else None

    for side, r in (("rho_slm", rho["slm"]), ("rho_clm", rho["clm"]), ("python", py)):
        out[f"{side}_tokens_per_s"] = round(r["tokens_per_s"], 1)
        out[f"{side}_step_seconds"] = round(r["step_seconds"], 5)
        out[f"{side}_mfu"] = mfu(r["tokens_per_s"])
        out[f"{side}_peak_bytes"] = r["peak_bytes"]
    out["slm_selected_fraction"] = round(rho["slm"]["selected_fraction"], 4)
    out["slm_over_python_tokens_per_s"] = round(rho["slm"]["tokens_per_s"] / py["tokens_per_s"], 3)
    out["slm_over_clm_step_time"] = round(rho["slm"]["step_seconds"] / rho["clm"]["step_seconds"], 4)
    for s in scopes[1:]:
        r = rho[f"slm_{s}"]
        out[f"rho_slm_{s}_step_seconds"] = round(r["step_seconds"], 5)
        out[f"rho_slm_{s}_selected_fraction"] = round(r["selected_fraction"], 4)
        out[f"slm_{s}_over_clm_step_time"] = round(r["step_seconds"] / rho["clm"]["step_seconds"], 4)
    out["flops_per_token"] = flops_per_token
    out["parameters"] = params
    common.emit(out)


if __name__ == "__main__":
    main()
