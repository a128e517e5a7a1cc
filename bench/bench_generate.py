"""Generation: librho's batched greedy decoding (greedy_generate_batch: the KV cache, prompts left-padded into one
batch, what `rho_eval --bench` runs) against transformers' generate (greedy, SDPA attention, left padding with an
attention mask, its KV cache) on the same weights, the same prompts and the same batch size; every row generates
exactly --new tokens (no EOS stop: min_new_tokens on transformers' side). Generated tokens per second over all
prompts, after a one-batch warm-up on each side, and the share of generated tokens that agree (random weights
give near-ties, where summation order may pick another token and the rows then diverge). One JSON line.

    python bench/bench_generate.py [--model-config configs/model/tiny.yaml] [--device cpu|cuda] [--batch 8]
                                   [--prompts 16] [--prompt-min 64] [--prompt-max 256] [--new 64] [--dtype fp32|bf16]
Goal: librho >= transformers' tokens/s on the CPU and on the GPU, same model, prompts and batch. The evaluation
harness itself uses vLLM on GPUs (continuous batching, paged KV cache), which this does not measure.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import torch

import common


def hf_side(hf_dir, prompts, a, device):
    import transformers  # noqa: F401
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = common.hf_model(hf_dir, device, dtype).eval()

    def run(batch):
        width = max(len(p) for p in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=a.new,
                                 min_new_tokens=a.new, do_sample=False, num_beams=1, pad_token_id=0)
        return out[:, width:].cpu()

    run(prompts[:a.batch])  # warm-up
    common.sync(device)
    t0 = time.perf_counter()
    rows = []
    for first in range(0, len(prompts), a.batch):
        rows += list(run(prompts[first:first + a.batch]))
    common.sync(device)
    secs = time.perf_counter() - t0
    return torch.stack(rows), secs


def main():
    ap = common.model_arguments()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--prompt-min", type=int, default=64)
    ap.add_argument("--prompt-max", type=int, default=256)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    build = common.build_dir(a.build)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        config = common.init_model(build, a.model_config, os.path.join(tmp, "hf"))
        rng = random.Random(0)
        prompts = [[rng.randrange(1, config["vocab_size"]) for _ in range(rng.randint(a.prompt_min, a.prompt_max))]
                   for _ in range(a.prompts)]
        with open(os.path.join(tmp, "prompts.json"), "w") as f:
            json.dump(prompts, f)
        rho = common.run_json([os.path.join(build, "bench", "bench_generate"), "--model", os.path.join(tmp, "hf"),
                               "--prompts", os.path.join(tmp, "prompts.json"), "--out", os.path.join(tmp, "ids.i64"),
                               "--new", str(a.new), "--batch", str(a.batch), "--device", a.device, "--dtype", a.dtype])
        rho_ids = torch.from_file(os.path.join(tmp, "ids.i64"), size=a.prompts * a.new, dtype=torch.long)
        hf_ids, hf_secs = hf_side(os.path.join(tmp, "hf"), prompts, a, a.device)
        # Agreement per row up to its first difference (after one, the rows continue from different text).
        rho_rows = rho_ids.view(a.prompts, a.new)
        agree_prefix = []
        for r in range(a.prompts):
            diff = (rho_rows[r] != hf_ids[r]).nonzero()
            agree_prefix.append(a.new if len(diff) == 0 else int(diff[0]))
        generated = a.prompts * a.new
        common.emit({"bench": "generate", "device": a.device, "dtype": a.dtype,
                     "model_config": os.path.basename(a.model_config), "batch": a.batch, "prompts": a.prompts,
                     "prompt_tokens": [a.prompt_min, a.prompt_max], "new_tokens": a.new,
                     "librho_tokens_per_s": rho["tokens_per_s"], "transformers_tokens_per_s": generated / hf_secs,
                     "speedup": rho["tokens_per_s"] / (generated / hf_secs),
                     "rows_identical": sum(p == a.new for p in agree_prefix) / a.prompts,
                     "tokens_before_first_difference_mean": sum(agree_prefix) / a.prompts})


if __name__ == "__main__":
    main()
