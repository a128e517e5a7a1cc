#!/usr/bin/env bash
# The demo: set-up, build the tools, then the whole Rho-1 pipeline on a generated corpus (CPU, minutes).
#   scripts/demo.sh [configs/demo/cpu.yaml]     -> out/demo/report/report.html
#   scripts/demo.sh configs/demo/accuracy.yaml  -> out/demo-accuracy: 6x longer runs, where accuracy leaves the floor
#   scripts/demo.sh configs/demo/variants.yaml  -> the same as cpu.yaml, plus every SLM variant (12 more minutes)
# The tools are built in build-demo/ for the CPU only, without debug info, tests or benchmarks: a clean build
# takes about 3.5 minutes on 2 cores instead of 9 (BUILD_DIR=build reuses the test build instead).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build-demo}
demo_args=()
if [[ "$BUILD_DIR" == build-demo ]]; then
  demo_args=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" -DRHO_CUDA=OFF
             -DRHO_BUILD_TESTS=OFF -DRHO_BUILD_BENCH=OFF)
fi
cmake -S . -B "$BUILD_DIR" -G Ninja "${demo_args[@]}" ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" --target rho_tokenize rho_pretrain rho_score rho_eval rho_view rho_categories rho_report
.venv/bin/python scripts/demo/pipeline.py --config "${1:-configs/demo/cpu.yaml}" --bin "$BUILD_DIR/apps"
