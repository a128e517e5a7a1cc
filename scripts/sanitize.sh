#!/usr/bin/env bash
# librho, the tools and the tests built with AddressSanitizer + UndefinedBehaviorSanitizer, then every ctest test.
#   BUILD_DIR (default build-asan)   JOBS (default: all cores)   CTEST_ARGS (e.g. "-R faults")   TARGETS (default: all)
#   nice -n 19 env JOBS=1 scripts/sanitize.sh      # a clean build: about 12+ minutes of compiling on 2 cores
# LibTorch itself is not instrumented. Its allocations are not ours to fix, so leak detection is off; a
# non-instrumented torch allocates with one operator new and frees with another (alloc/dealloc mismatch reports
# inside torch), so that check is off too; vptr checks need instrumented type info on both sides, so -fno-sanitize=vptr.
# Everything else (heap/stack/global overflows, use after free, UB: overflow, shifts, misaligned loads, bad enum
# values, null references ...) stops the process with a report.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-asan}
JOBS=${JOBS:-$(nproc)}
san="-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# Reports also go to files: a report in a process whose failure a test expects (a bad-input case exits 1 anyway)
# must still fail the run, so every report is collected and any report fails this script.
REPORTS="$PWD/$BUILD_DIR/sanitizer-reports"
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:alloc_dealloc_mismatch=0:verify_asan_link_order=0:log_path=$REPORTS/asan}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRHO_CUDA=OFF -DRHO_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$JOBS" ${TARGETS:+--target $TARGETS}
status=0
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" --timeout 3600 ${CTEST_ARGS:-} || status=$?
if compgen -G "$REPORTS/*" >/dev/null; then
  echo "sanitize: reports in $REPORTS:"
  head -n 40 "$REPORTS"/*
  status=1
else
  echo "sanitize: no AddressSanitizer or UndefinedBehaviorSanitizer report"
fi
exit $status
