"""Generation: librho's batched greedy decoding (greedy_generate_batch: a ragged KV cache, --batch sequences at
a time, what `rho_eval --bench` runs) against transformers' generate (greedy, SDPA attention, left padding with an
attention mask, its KV cache) on the same weights, the same prompts and the same batch size; every row generates
exactly --new tokens (no EOS stop: min_new_tokens on transformers' side). Generated tokens per second over all
prompts, after a one-batch warm-up on each side, and the share of generated tokens that agree (random weights
give near-ties, where summation order may pick another token and the rows then diverge). One JSON line for that
comparison ("generate"), printed as soon as it is made; then one line per variant asked for, each printed when
it is done ("generate_without_cudnn", "generate_cuda_graphs", "generate_static"), so a run cut short keeps what
it finished.

    python bench/bench_generate.py [--model-config configs/model/tiny.yaml] [--device cpu|cuda] [--batch 8]
                                   [--prompts 16] [--prompt-min 64] [--prompt-max 256] [--new 64] [--new-min N]
                                   [--prefix N] [--dtype fp32|bf16] [--cuda-graphs] [--without-cudnn]
Goal: librho >= transformers' tokens/s on the CPU and on the GPU, same model, prompts and batch. The evaluation
harness itself uses vLLM on GPUs (continuous batching, paged KV cache, CUDA graphs), which this does not measure.
With --new-min, prompt i stops after its own length, drawn from [new-min, new] (a stopping criterion on
transformers' side), as generations of different lengths do in an evaluation: librho's continuous batching (a
finished row takes the next prompt) then does less work than fixed batches, and librho's fixed batches
(--static) are timed too. Without it every row generates --new tokens and both sides do the same work. With
--prefix N every prompt starts with the same N tokens, as few-shot prompts do: librho runs them once.
librho's own runs report the wall time of their prefills and of their decoding steps apart.
On Hopper and newer GPUs PyTorch prefers cuDNN's attention, which builds an execution plan for each new shape (a
new prompt width, a new key count in a decoding step); --without-cudnn times librho's eager decoding and
transformers' generate again with cuDNN's attention off (TORCH_CUDNN_SDPA_DEPRIORITIZED=1 for librho's process,
torch.backends.cuda.enable_cudnn_sdp(False) for transformers), to say what those plans cost each side.
"""
import json
import os
import random
import sys
import tempfile
import time

import torch

import common


def hf_side(model, prompts, lengths, a, device):
    import transformers

    class RowLengths(transformers.StoppingCriteria):
        """Row r is done after want[r] new tokens (rows that are done keep their place in the batch)."""

        def __init__(self, width, want):
            self.width, self.want = width, torch.tensor(want, device=device)

        def __call__(self, input_ids, scores, **kwargs):
            return (input_ids.shape[1] - self.width) >= self.want

    def run(first, count):
        batch, want = prompts[first:first + count], lengths[first:first + count]
        width = max(len(p) for p in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max(want),
                                 min_new_tokens=max(want), do_sample=False, num_beams=1, pad_token_id=0,
                                 stopping_criteria=transformers.StoppingCriteriaList([RowLengths(width, want)]))
        return [out[r, width:width + want[r]].cpu() for r in range(len(batch))]

    run(0, a.batch)  # warm-up
    common.sync(device)
    t0 = time.perf_counter()
    rows = []
    for first in range(0, len(prompts), a.batch):
        rows += run(first, min(a.batch, len(prompts) - first))
    common.sync(device)
    secs = time.perf_counter() - t0
    return rows, secs


def main():
    ap = common.model_arguments()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--prompt-min", type=int, default=64)
    ap.add_argument("--prompt-max", type=int, default=256)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=0,
                    help="tokens every prompt starts with (few-shot examples), before its own --prompt-min..max")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="also time librho with its decoding steps replayed from CUDA graphs")
    ap.add_argument("--new-min", type=int, default=None,
                    help="each prompt generates a length drawn from [new-min, new] (default: all --new)")
    ap.add_argument("--without-cudnn", action="store_true",
                    help="also time librho's eager decoding and transformers' generate with cuDNN's attention off")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--profile-dir", help="write a Chrome trace of librho's eager decoding there (generate_eager.json: "
                                          "one batch's prefill and 8 steps; bench/profile_summary.py reads it)")
    a = ap.parse_args()
    build = common.build_dir(a.build)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        config = common.init_model(build, a.model_config, os.path.join(tmp, "hf"))
        rng = random.Random(0)
        shared = [rng.randrange(1, config["vocab_size"]) for _ in range(a.prefix)]
        prompts = [shared + [rng.randrange(1, config["vocab_size"])
                             for _ in range(rng.randint(a.prompt_min, a.prompt_max))]
                   for _ in range(a.prompts)]
        new_min = a.new if a.new_min is None else a.new_min
        lengths = [rng.randint(new_min, a.new) for _ in range(a.prompts)]
        with open(os.path.join(tmp, "prompts.json"), "w") as f:
            json.dump({"prompts": prompts, "new": lengths}, f)

        def librho(*extra, env=None):
            return common.run_json([os.path.join(build, "bench", "bench_generate"), "--model", os.path.join(tmp, "hf"),
                                    "--prompts", os.path.join(tmp, "prompts.json"), "--out",
                                    os.path.join(tmp, "ids.i64"), "--batch", str(a.batch), "--device", a.device,
                                    "--dtype", a.dtype, *extra], env=env)
        def librho_rows():  # the ids the last librho run wrote, one tensor per prompt
            return list(torch.from_file(os.path.join(tmp, "ids.i64"), size=sum(lengths), dtype=torch.long)
                        .split(lengths))
        # First the comparison itself: librho's eager decoding (profiled on request) against transformers.
        rho = librho(*(["--profile", os.path.join(a.profile_dir, "generate_eager.json")] if a.profile_dir else []))
        rho_rows = librho_rows()
        hf = common.hf_model(os.path.join(tmp, "hf"), a.device, torch.bfloat16 if a.dtype == "bf16" else torch.float32)
        hf_rows, hf_secs = hf_side(hf.eval(), prompts, lengths, a, a.device)
        # Agreement per row up to its first difference (after one, the rows continue from different text).
        agree_prefix = []
        for r in range(a.prompts):
            diff = (rho_rows[r] != hf_rows[r]).nonzero()
            agree_prefix.append(lengths[r] if len(diff) == 0 else int(diff[0]))
        generated = sum(lengths)
        setting = {"device": a.device, "dtype": a.dtype, "model_config": os.path.basename(a.model_config),
                   "batch": a.batch, "prompts": a.prompts, "prompt_tokens": [a.prompt_min, a.prompt_max],
                   "shared_prefix": a.prefix, "new_tokens": [new_min, a.new], "generated_tokens": generated}
        common.emit({"bench": "generate", **setting,
                     "librho_tokens_per_s": rho["tokens_per_s"], "transformers_tokens_per_s": generated / hf_secs,
                     "speedup": rho["tokens_per_s"] / (generated / hf_secs),
                     "librho_prefill_seconds": rho["prefill_seconds"], "librho_step_seconds": rho["step_seconds"],
                     "librho_decode_steps": rho["decode_steps"], "librho_prefill_padding": rho["prefill_padding"],
                     "rows_identical": sum(p == n for p, n in zip(agree_prefix, lengths)) / a.prompts,
                     "tokens_before_first_difference_mean": sum(agree_prefix) / a.prompts})

        without_cudnn = a.without_cudnn and a.device == "cuda"  # cuDNN is a CUDA library: nothing to compare elsewhere
        if a.without_cudnn and not without_cudnn:
            print("bench_generate: --without-cudnn has no effect off CUDA; skipped", file=sys.stderr)
        if without_cudnn:  # both sides again with cuDNN's attention off
            rho_no_cudnn = librho(env={"TORCH_CUDNN_SDPA_DEPRIORITIZED": "1"})
            was = torch.backends.cuda.cudnn_sdp_enabled()
            torch.backends.cuda.enable_cudnn_sdp(False)
            try:
                hf_no_cudnn_secs = hf_side(hf, prompts, lengths, a, a.device)[1]
            finally:
                torch.backends.cuda.enable_cudnn_sdp(was)
            common.emit({"bench": "generate_without_cudnn", **setting,
                         "librho_tokens_per_s": rho_no_cudnn["tokens_per_s"],
                         "librho_prefill_seconds": rho_no_cudnn["prefill_seconds"],
                         "librho_step_seconds": rho_no_cudnn["step_seconds"],
                         "transformers_tokens_per_s": generated / hf_no_cudnn_secs,
                         "speedup": rho_no_cudnn["tokens_per_s"] / (generated / hf_no_cudnn_secs),
                         "librho_over_with_cudnn": rho_no_cudnn["tokens_per_s"] / rho["tokens_per_s"],
                         "transformers_over_with_cudnn": hf_secs / hf_no_cudnn_secs})
        if a.cuda_graphs:  # decoding steps replayed from CUDA graphs, against librho's eager steps
            rho_graphs = librho("--cuda-graphs")
            graph_rows = librho_rows()
            common.emit({"bench": "generate_cuda_graphs", **setting,
                         "librho_tokens_per_s": rho_graphs["tokens_per_s"],
                         "replayed_steps": [rho_graphs["graph_replays"], rho_graphs["decode_steps"]],
                         "graphs_recorded": rho_graphs["graphs_recorded"],
                         "prefill_seconds": rho_graphs["prefill_seconds"],
                         "step_seconds": rho_graphs["step_seconds"],
                         "over_eager": rho_graphs["tokens_per_s"] / rho["tokens_per_s"],
                         "over_transformers": rho_graphs["tokens_per_s"] / (generated / hf_secs),
                         "rows_identical_to_eager": sum(
                             bool(torch.equal(g, e)) for g, e in zip(graph_rows, rho_rows)) / a.prompts})
        if new_min < a.new:  # continuous batching against librho's own fixed batches
            rho_static = librho("--static")
            common.emit({"bench": "generate_static", **setting,
                         "librho_static_tokens_per_s": rho_static["tokens_per_s"],
                         "continuous_over_static": rho["tokens_per_s"] / rho_static["tokens_per_s"]})

if __name__ == "__main__":
    main()
