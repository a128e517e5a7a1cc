#!/usr/bin/env bash
# The demo: set-up, build the tools, then the whole Rho-1 pipeline on a generated corpus (CPU, minutes).
#   scripts/demo.sh [configs/demo/cpu.yaml]     -> out/demo/report/report.html
#   scripts/demo.sh configs/demo/variants.yaml  -> the same, plus every SLM variant (about 20 more minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" --target rho_tokenize rho_pretrain rho_score rho_eval rho_view rho_categories
.venv/bin/python scripts/demo/pipeline.py --config "${1:-configs/demo/cpu.yaml}" --bin "$BUILD_DIR/apps"
