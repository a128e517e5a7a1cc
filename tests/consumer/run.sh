#!/usr/bin/env bash
# Installs the built librho into a scratch prefix, builds tests/consumer against it with only that prefix on
# CMAKE_PREFIX_PATH (the package finds the Torch it was built against), runs it, and runs installed tools. Then
# the custom training loop of docs/training.md (slm_loop.cpp) against the installed rho_pretrain on the same
# configs: the weights must be the same bytes, for micro-batch scope (frozen self-reference) and step scope
# (offline reference losses from rho_score).
set -euo pipefail
build=$1 work=$2  # (a third argument, once Torch_DIR, is no longer needed)
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$here" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$work/build"
"$work/build/consumer" "$work/roundtrip"
# Installed tools start (RPATH to the installed librho and to torch) and work: a tiny model, initialised and scored.
env -u LD_LIBRARY_PATH "$work/prefix/bin/rho_score" --help >/dev/null
env -u LD_LIBRARY_PATH "$work/prefix/bin/rho_model" init "$(dirname "$here")/../configs/model/tiny.yaml" \
    --out "$work/tiny" >/dev/null
env -u LD_LIBRARY_PATH "$work/prefix/bin/rho_model" info "$work/tiny" | grep -q '"parameters": 158016'
echo "installed tools run"

# A custom training loop with librho's SLM API equals rho_pretrain bit for bit.
bin="$work/prefix/bin" src=$(cd "$here/../.." && pwd)
env -u LD_LIBRARY_PATH "$bin/rho_tokenize" "$src"/docs/*.md --format text --train-tokenizer --vocab-size 400 \
    --out "$work/tok" --quiet >/dev/null
env -u LD_LIBRARY_PATH "$bin/rho_model" init "$src/configs/model/tiny.yaml" --seed 5 --out "$work/ref" >/dev/null
env -u LD_LIBRARY_PATH "$bin/rho_score" --model "$work/ref" --data "$work/tok" --out "$work/losses" --seq-len 64 \
    --device cpu >/dev/null 2>&1
# micro-batch scope with a frozen self-reference; step scope with rho_score's losses; step scope with a moving-
# average self-reference after a 2-step CLM warm start.
for run in micro_batch step ema; do
  case $run in
    micro_batch) slm="scope: micro_batch, self_reference: frozen" ;;
    step) slm="scope: step, reference_losses: $work/losses" ;;
    ema) slm="scope: step, self_reference: ema, ema_decay: 0.9, start_step: 2" ;;
  esac
  cat > "$work/$run.yaml" <<YAML
run: {out_dir: $work/runs/$run, seed: 3, device: cpu}
model: {config: $src/configs/model/tiny.yaml}
data: {train: $work/tok, seq_len: 64, batch_size: 4, grad_accum: 2}
optim: {lr: 0.003, min_lr: 0.0003, warmup_steps: 2, max_steps: 6}
train: {stage: slm, log_every: 3}
slm: {ratio: 0.6, $slm}
YAML
  env -u LD_LIBRARY_PATH "$bin/rho_pretrain" "$work/$run.yaml" >/dev/null 2>&1
  "$work/build/slm_loop" "$work/$run.yaml" "$work/loop-$run"
  cmp "$work/runs/$run/hf/model.safetensors" "$work/loop-$run/model.safetensors"
  echo "slm_loop ($slm): weights equal rho_pretrain's bit for bit"
done

