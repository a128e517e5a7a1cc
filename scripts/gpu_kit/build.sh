#!/usr/bin/env bash
# Builds the GPU kit: a self-contained bundle (gpu-kit/, git-ignored) that scripts/gpu_kit/run.sh runs on any
# x86-64 Linux CUDA machine whose python3 has torch 2.11 (cu130), with nothing built there:
#   build/{apps,bench,tests,librho}  the eight tools, the C++ benchmarks, rho_tests, librho.so and librho_data.so (Release, stripped,
#                                    CUDA kernels for sm_90a and sm_90 plus compute_90 PTX, -lineinfo)
#   lib/                             the shared libraries those need that neither torch nor a base system has
#                                    (sentencepiece, yaml-cpp, protobuf-lite, ...: whatever ldd resolves outside)
#   data/                            GSM8K and the Llama-2 tokenizer from $RHO_SHARED_DATA (default ../shared/data),
#                                    for the end-to-end part; left out with a notice when absent
# Prints its size and fails past 56 MiB (the working tree that travels with it must stay under 64 MiB).
#
#   scripts/gpu_kit/build.sh                 CUDA build in build-kit/ -> gpu-kit/
#   KIT_CUDA=OFF scripts/gpu_kit/build.sh    CPU-only build (the dry run: scripts/gpu_kit/run.sh then skips GPU parts)
#   KIT_FROM_BUILD=build KIT_DIR=/tmp/kit scripts/gpu_kit/build.sh
#                                            bundle an existing build folder as it is (no set-up, no build)
# Then, on the CUDA machine, from a copy of the repository with gpu-kit/ in it:  scripts/gpu_kit/run.sh gpu-kit
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${KIT_BUILD_DIR:-build-kit}
KIT=${KIT_DIR:-gpu-kit}
LIMIT_MIB=${KIT_LIMIT_MIB:-56}
SHARED=${RHO_SHARED_DATA:-../shared/data}
TARGETS=(rho_model rho_tokenize rho_pretrain rho_score rho_eval rho_view rho_categories rho_report
         bench_score bench_train bench_linear_ce bench_score_memory bench_generate rho_tests)
if [[ -n "${KIT_FROM_BUILD:-}" ]]; then
  BUILD=$KIT_FROM_BUILD
else
  [[ -n "${RHO_SKIP_SETUP:-}" ]] || scripts/setup.sh
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRHO_CUDA="${KIT_CUDA:-ON}" \
        "-DRHO_CUDA_ARCHS=9.0a;9.0+PTX" -DRHO_ARROW=OFF ${CMAKE_ARGS:-} >/dev/null  # Arrow: 100 MB of libraries
  cmake --build "$BUILD" --target "${TARGETS[@]}"
fi

TORCH_DIR=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
tmp="$KIT.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"/build/{apps,bench,tests,librho} "$tmp"/lib "$tmp"/data
for t in "${TARGETS[@]}"; do
  case $t in
    rho_tests) src="$BUILD/tests/$t" dst=tests ;;
    bench_*) src="$BUILD/bench/$t" dst=bench ;;
    *) src="$BUILD/apps/$t" dst=apps ;;
  esac
  strip --strip-unneeded -o "$tmp/build/$dst/$t" "$src"
done
for lib in librho.so librho_data.so; do
  strip --strip-unneeded -o "$tmp/build/librho/$lib" "$BUILD/librho/$lib"
done

# Libraries to carry: what the binaries resolve outside torch, its nvidia/* packages and the CUDA toolkit, less
# the C/C++ runtime every Linux has (glibc's libraries, libstdc++, libgcc_s).
base='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libutil|libstdc\+\+|libgcc_s)\.so'
export LD_LIBRARY_PATH="$tmp/build/librho:$TORCH_DIR/lib:$(ls -d "$TORCH_DIR"/../nvidia/*/lib | tr '\n' ':')"
ldd "$tmp"/build/*/* | awk '/=> \// {print $1, $3}' | sort -u | while read -r name path; do
  [[ $name =~ $base ]] && continue
  case $path in "$TORCH_DIR"/* | */site-packages/nvidia/* | /usr/local/cuda*/* | "$tmp"/*) continue ;; esac
  cp -L "$path" "$tmp/lib/$name"
done
if ldd "$tmp"/build/*/* | grep -q "not found"; then
  ldd "$tmp"/build/*/* | grep "not found" | sort -u >&2
  echo "build.sh: libraries missing from the kit" >&2
  exit 1
fi
if [[ -f "$SHARED/tokenizers/llama2-32k.model" && -d "$SHARED/gsm8k" ]]; then
  mkdir -p "$tmp/data/tokenizers"
  cp -r "$SHARED/gsm8k" "$tmp/data/"
  cp "$SHARED/tokenizers/llama2-32k.model" "$tmp/data/tokenizers/"
else
  echo "build.sh: no GSM8K / Llama-2 tokenizer under $SHARED: the kit's end-to-end part will be skipped"
fi
{ echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' with uncommitted changes')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $BUILD: $(grep -E '^(CMAKE_BUILD_TYPE|RHO_CUDA|RHO_CUDA_ARCHS):' "$BUILD/CMakeCache.txt" | tr '\n' ' ')"; } > "$tmp/VERSION"
rm -rf "$KIT"
mv "$tmp" "$KIT"
size_kib=$(du -sk "$KIT" | cut -f1)
echo "gpu kit: $KIT, $((size_kib / 1024)) MiB ($(ls "$KIT/lib" | tr '\n' ' '))"
if ((size_kib > LIMIT_MIB * 1024)); then
  echo "build.sh: the kit is larger than $LIMIT_MIB MiB" >&2
  exit 1
fi
