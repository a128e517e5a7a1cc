#!/usr/bin/env bash
# The demo: set-up, build the tools, then the whole Rho-1 pipeline on a generated corpus (CPU, minutes).
#   scripts/demo.sh [configs/demo/cpu.yaml]     -> out/demo/report/report.html
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" --target rho_tokenize rho_pretrain rho_score rho_eval rho_view
.venv/bin/python scripts/demo/pipeline.py --config "${1:-configs/demo/cpu.yaml}" --bin "$BUILD_DIR/apps"
