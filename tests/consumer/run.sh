#!/usr/bin/env bash
# Installs the built librho into a scratch prefix, builds tests/consumer against it, and runs it.
set -euo pipefail
build=$1 work=$2 torch_dir=$3
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$here" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" -DTorch_DIR="$torch_dir" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$work/build"
"$work/build/consumer" "$work/roundtrip"
