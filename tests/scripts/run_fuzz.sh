#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, a separate build dir with RHO_FUZZ=ON) and runs each for a bounded time.
#   tests/scripts/run_fuzz.sh [SECONDS_PER_TARGET=60] [TARGET ...]
#   BUILD_DIR (default build-fuzz)   JOBS (default: all cores)   FUZZ_ARGS (extra libFuzzer flags, e.g. -jobs=2)
# The committed seeds (fuzz/corpus/<target>) are read; what the fuzzer adds goes to $BUILD_DIR/fuzz-corpus/<target>
# (kept between runs), crashes to $BUILD_DIR/fuzz-artifacts/<target>/. Exit 1 when any target finds a crash.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(fuzz_safetensors_header fuzz_manifest fuzz_jsonl fuzz_sp_encoder)
  # The Parquet/Arrow readers when pyarrow (their Arrow libraries) is there, as the build finds it.
  ! .venv/bin/python -c "import pyarrow" 2>/dev/null || TARGETS+=(fuzz_columnar)
fi
BUILD_DIR=${BUILD_DIR:-build-fuzz}
# Exit 77 (ctest: skipped) without clang or its libFuzzer runtime.
command -v clang++ >/dev/null || { echo "run_fuzz: SKIPPED: clang++ is missing (apt-get install clang libclang-rt-dev)"; exit 77; }
echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
  clang++ -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null ||
  { echo "run_fuzz: SKIPPED: clang++ cannot link -fsanitize=fuzzer (apt-get install libclang-rt-dev)"; exit 77; }
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DRHO_FUZZ=ON -DRHO_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}" --target "${TARGETS[@]}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:alloc_dealloc_mismatch=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${TARGETS[@]}"; do
  corpus="$BUILD_DIR/fuzz-corpus/$t" artifacts="$BUILD_DIR/fuzz-artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  echo "== $t: ${SECONDS_PER} s"
  if ! "$BUILD_DIR/fuzz/$t" -max_total_time="$SECONDS_PER" -max_len=16384 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} "$corpus" "fuzz/corpus/$t" 2>"$BUILD_DIR/fuzz-$t.log"; then
    echo "== $t: FOUND A PROBLEM (input under $artifacts/); the report:"
    grep -v "^#\|^INFO\|^\s*$" "$BUILD_DIR/fuzz-$t.log" | tail -40
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$BUILD_DIR/fuzz-$t.log" | sed "s/^/   /"
done
exit $status
