#!/usr/bin/env bash
# The test command: set-up (idempotent), configure, build, run every test with ctest.
#   BUILD_DIR (default build)   CMAKE_ARGS (extra configure arguments)   CTEST_ARGS (e.g. "-L cuda")
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" ${CTEST_ARGS:-}
