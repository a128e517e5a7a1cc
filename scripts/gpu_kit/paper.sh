#!/usr/bin/env bash
# The GPU kit's second command, for the minutes the first leaves: the paper's setting in miniature
# (configs/demo/paper-mini-gpu.yaml): continual pretraining of a base model, a reference fine-tuned from it on
# the high-quality set, CLM against SLM from the base on the same tokens, target loss and few-shot accuracy before
# (the base) and after. The demo pipeline (scripts/demo/pipeline.py) runs it with the kit's tools; nothing is
# built here. Run from the repository root, after scripts/gpu_kit/build.sh:
#
#   OUT=results/ scripts/gpu_kit/paper.sh [gpu-kit]   (PAPER_SECONDS=300: its time limit; PAPER_CONFIG: another
#                                                      demo config, e.g. configs/demo/continual-ci.yaml on a CPU;
#                                                      PAPER_OUT: the work folder instead of the config's out_dir)
#
# The tokenizer is the kit's Llama-2 model when the kit holds one, otherwise one trained on the corpus. The work
# stays in the config's out_dir (out/paper-mini): run the command again and it continues where the time limit
# cut it. Writes paper.log, paper_summary.json (the demo's summary: final target losses, accuracies, the base's
# and the reference's) and report.html to $OUT. Exits 0 when the pipeline finished, 1 when it failed or ran out
# of time, 0 with a notice when there is no CUDA device for a CUDA config.
set -uo pipefail
cd "$(dirname "$0")/../.."
KIT_ARG=${1:-gpu-kit}
source scripts/gpu_kit/env.sh
CONFIG=${PAPER_CONFIG:-configs/demo/paper-mini-gpu.yaml}

setting() {  # setting KEY DEFAULT: a top-level key of the config, its bases included
  "$PY" -c 'import sys; sys.path.insert(0, "scripts/demo"); from pipeline import load_config
print(load_config(sys.argv[1]).get(sys.argv[2], sys.argv[3]))' "$CONFIG" "$1" "$2"
}
# The run, its output also in $OUT/paper.log (a pipe into tee, so that every line is written when the script ends).
paper() {
  device=$(setting device cpu) || { echo "paper.sh: cannot read $CONFIG"; return 2; }
  if [[ $device == cuda && $GPU == 0 ]]; then
    echo "=== SKIP paper: no CUDA device ($CONFIG runs on cuda)"
    return 0
  fi
  config=$work/paper.yaml
  { echo "base: $(pwd)/$CONFIG"
    if [[ -f $KIT/data/tokenizers/llama2-32k.model ]]; then
      echo "tokenizer: {model: $KIT/data/tokenizers/llama2-32k.model}"
    elif grep -q "^tokenizer: *{model:" "$CONFIG"; then
      echo "tokenizer: {train_vocab_size: 8000}"  # the kit holds no Llama-2 model: train one on the corpus
    fi
  } > "$config"
  out_dir=${PAPER_OUT:-$(setting out_dir out/demo)}
  echo "=== paper: $CONFIG into $out_dir, limit ${PAPER_SECONDS:-300}s; $(head -1 "$KIT/VERSION")"
  timeout -k 10 "${PAPER_SECONDS:-300}" "$PY" scripts/demo/pipeline.py --config "$config" --bin "$B/apps" --out "$out_dir"
  rc=$?
  echo "=== paper: exit $rc after $SECONDS s$( ((rc == 124)) && echo ' (time limit: run the command again to continue)')"
  for f in summary.json:paper_summary.json report.html:report.html; do
    src=$out_dir/report/${f%%:*}
    [[ -f $src && $(stat -c %s "$src") -lt 16000000 ]] && cp "$src" "$OUT/${f#*:}"
  done
  ((rc == 0))
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
paper 2>&1 | tee -a "$OUT/paper.log"
exit "${PIPESTATUS[0]}"
