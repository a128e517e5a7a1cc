# Sourced by the kit's run.sh and paper.sh: finds torch from $PY (python3 by default) and puts the libraries the
# kit's binaries load on LD_LIBRARY_PATH (the kit's own lib/ and librho, torch's lib/ = LibTorch, its nvidia/*
# packages = the CUDA libraries). Sets KIT (absolute), B (the kit's build folder), PY, TORCH_DIR, GPU (1 when
# torch sees a CUDA device) and OUT (absolute, made; default out/gpu-kit). Expects KIT_ARG, the kit folder given
# on the command line.
KIT=$(cd "${KIT_ARG:-gpu-kit}" && pwd) || {
  echo "$0: no kit folder ${KIT_ARG:-gpu-kit} (build it with scripts/gpu_kit/build.sh)" >&2
  exit 2
}
PY=${PYTHON:-python3}
B=$KIT/build
TORCH_DIR=$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))') || {
  echo "$0: $PY cannot import torch" >&2
  exit 2
}
NV_LIBS=$(ls -d "$TORCH_DIR"/../nvidia/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$KIT/lib:$B/librho:$TORCH_DIR/lib:$NV_LIBS${LD_LIBRARY_PATH:-}"
export RHO_BUILD_DIR=$B PYTHONUNBUFFERED=1 PATH="$PATH:/usr/local/cuda/bin"
GPU=0
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' && GPU=1
OUT=${OUT:-out/gpu-kit}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
