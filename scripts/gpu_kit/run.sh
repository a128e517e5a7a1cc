#!/usr/bin/env bash
# The GPU kit's run: every GPU figure librho has targets for, from one command on a CUDA machine, using the bundle
# scripts/gpu_kit/build.sh made (nothing is built here). Run from the repository root:
#
#   OUT=results/ scripts/gpu_kit/run.sh [gpu-kit]      (KIT_SECONDS=450: the wall-time budget of all parts;
#                                                       KIT_SKIP="e2e linear_ce": parts to leave out;
#                                                       KIT_TRAIN_STEPS=10, KIT_TRAIN_WARMUP=3, KIT_SCORE_WINDOWS=64)
#
# Needs python3 with torch (its lib/ holds LibTorch; the CUDA libraries come from its nvidia/* packages) and,
# for the baselines, transformers 4.x or 5.x. Each part is time-boxed and a failing part does not stop the
# others; parts that need a GPU are skipped, with the reason, when there is none (the CPU dry run). Writes at most
# 7 files to $OUT: kit.log (everything), env.txt, bench.jsonl, profile.txt, sanitizer.txt, e2e.txt,
# trace_train_slm.json.gz. Exits 0 when every part that ran passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
KIT_ARG=${1:-gpu-kit}
source scripts/gpu_kit/env.sh
BUDGET=${KIT_SECONDS:-450}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

FAILED=()
# part NAME LIMIT_SECONDS NEEDS(gpu|any) COMMAND...: runs COMMAND under a time limit (cut to what is left of the
# budget), logs its exit status and time; a skipped part says why.
part() {
  local name=$1 limit=$2 needs=$3
  shift 3
  local left=$((BUDGET - SECONDS))
  if [[ " ${KIT_SKIP:-} " == *" $name "* ]]; then echo "=== SKIP $name: in KIT_SKIP"; return; fi
  if [[ $needs == gpu && $GPU == 0 ]]; then echo "=== SKIP $name: no CUDA device"; return; fi
  if ((left < 15)); then echo "=== SKIP $name: the budget (${BUDGET}s) is spent"; FAILED+=("$name(no time)"); return; fi
  ((limit > left)) && limit=$left
  echo "=== [$SECONDS s] $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@"  # bash -c: the command may be one of the functions below
  local rc=$?
  echo "=== [$SECONDS s] $name: exit $rc after $((SECONDS - t0)) s"
  ((rc == 0)) || FAILED+=("$name($rc)")
}

env_report() {
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  cat "$KIT/VERSION"
  uname -a
  nvidia-smi || echo "nvidia-smi: none"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
    torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
  "$PY" -c 'import transformers; print("transformers", transformers.__version__)' || echo "transformers: none"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  local missing=0
  for f in "$B"/apps/* "$B"/bench/* "$B"/tests/rho_tests "$B"/librho/librho*.so; do
    if ldd "$f" | grep -q "not found"; then echo "ldd $f:"; ldd "$f" | grep "not found"; missing=1; fi
  done
  ((missing == 0)) && echo "ldd: every library resolves"
  return $missing
}

# bench NAME COMMAND...: everything to the log as it comes, and each JSON line also to bench.jsonl the moment it
# is printed, so the lines of a benchmark cut at its time limit are kept. The reader ignores the limit's SIGTERM
# (sent to the whole process group) and drains the pipe; the KILL after it still bounds it. A last line without
# a newline goes to the log only (it may be cut).
bench() {
  shift
  "$@" | {
    trap '' TERM
    while true; do
      if IFS= read -r line; then
        printf '%s\n' "$line"
        [[ $line == "{"* ]] && printf '%s\n' "$line" >> "$OUT/bench.jsonl"
      else
        [[ -n $line ]] && printf '%s\n' "$line"
        break
      fi
    done
  }
  return "${PIPESTATUS[0]}"
}

sanitize() {
  command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer: not on PATH"; return 1; }
  local rc=0
  for tool in memcheck racecheck; do
    echo "--- compute-sanitizer --tool $tool rho_tests [topk][cuda],rotary on CUDA: one kernel*,fused_sum on CUDA*,swiglu passes on CUDA*"
    compute-sanitizer --tool $tool --error-exitcode 9 "$B/tests/rho_tests" "[topk][cuda],rotary on CUDA: one kernel*,fused_sum on CUDA*,swiglu passes on CUDA*" || rc=1
  done
  return $rc
}

export -f env_report bench sanitize
export B OUT WORK PY KIT
# Every part, the output also in $OUT/kit.log (a pipe into tee, so that every line is written when the script ends).
kit() {
  M=configs/model/tinyllama-1.1b.yaml
  part env 60 any env_report > >(tee "$OUT/env.txt")
  part "tests[cuda]" 120 gpu "$B/tests/rho_tests" "[cuda]" --durations yes
  # First what the newest changes wait on (the training step and decoding speed, each against transformers), then
  # the kernel and scoring benchmarks, sharding through NCCL in a group of one, the profiles, the memory plan
  # against measured peaks, the CLI pipeline.
  part train 180 gpu bench train "$PY" bench/bench_train.py --device cuda --model-config $M --seq 2048 --batch 8 \
    --warmup "${KIT_TRAIN_WARMUP:-3}" --steps "${KIT_TRAIN_STEPS:-10}" --build "$B" --profile-dir "$WORK"
  part generate 200 gpu bench generate "$PY" bench/bench_generate.py --device cuda --model-config $M --dtype bf16 \
    --batch 16 --prompts 32 --prompt-min 256 --prompt-max 1024 --new 128 --new-min 16 --cuda-graphs \
    --build "$B" --profile-dir "$WORK"
  part sanitizer 90 gpu sanitize > >(tee "$OUT/sanitizer.txt")
  part topk 60 gpu bench topk "$PY" bench/bench_topk.py --device cuda --build "$B"
  part score 150 gpu bench score "$PY" bench/bench_score.py --device cuda --model-config $M --seq 2048 --batch 8 \
    --precisions autocast,bf16 --windows "${KIT_SCORE_WINDOWS:-64}" --build "$B" --profile-dir "$WORK"
  part linear_ce 60 gpu bench linear_ce "$B/bench/bench_linear_ce" --device cuda --dtype bf16 --hidden 2048
  # Sharding parameters through a process group of one: NCCL's all-gathers and reduce-scatters run for real on the
  # one GPU, and the traced step says how much of their time the compute stream's kernels overlapped.
  part sharded 120 gpu bench sharded "$PY" bench/bench_sharded.py --device cuda --model-config $M --seq 2048 \
    --batch 4 --warmup 2 --steps 3 --build "$B" --profile-dir "$WORK"
  part profile 30 gpu "$PY" bench/profile_summary.py "$WORK"/score_*.json "$WORK/train_clm.json" \
    "$WORK/train_slm.json" "$WORK/train_sharded.json" "$WORK/generate_eager.json" > >(tee "$OUT/profile.txt")
  [[ -f $WORK/train_slm.json ]] && gzip -c "$WORK/train_slm.json" > "$OUT/trace_train_slm.json.gz"
  # rho_model plan against the measured peak of a first step, unsharded and sharded (one process: the sharded code
  # paths on CUDA), with and without activation checkpointing.
  part memory_plan 200 gpu bench memory_plan "$PY" bench/bench_memory_plan.py --device cuda --model-config $M \
    --seq 2048 --batch 8 --run-limit 45 --build "$B"
  if [[ -f $KIT/data/tokenizers/llama2-32k.model ]]; then
    devs=cpu
    ((GPU)) && devs=cuda,cpu
    part e2e 150 any "$PY" scripts/gpu_kit/e2e.py --bin "$B/apps" --data "$KIT/data" --out "$WORK/e2e" \
      --devices $devs > >(tee "$OUT/e2e.txt")
  else
    echo "=== SKIP e2e: the kit holds no GSM8K / Llama-2 tokenizer data"
  fi

  echo "=== done in $SECONDS s; failed: ${FAILED[*]:-none}"
  ((${#FAILED[@]} == 0))
}

kit 2>&1 | tee -a "$OUT/kit.log"
exit "${PIPESTATUS[0]}"
