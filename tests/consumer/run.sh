#!/usr/bin/env bash
# Installs the built librho into a scratch prefix, builds tests/consumer against it with only that prefix on
# CMAKE_PREFIX_PATH (the package finds the Torch it was built against), runs it, and runs an installed tool.
set -euo pipefail
build=$1 work=$2  # (a third argument, once Torch_DIR, is no longer needed)
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$here" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$work/build"
"$work/build/consumer" "$work/roundtrip"
# Installed tools start (RPATH to the installed librho and to torch) and work: a tiny model, initialised and scored.
env -u LD_LIBRARY_PATH "$work/prefix/bin/rho_score" --help >/dev/null
env -u LD_LIBRARY_PATH "$work/prefix/bin/rho_model" init "$(dirname "$here")/../configs/model/tiny.yaml" \
    --out "$work/tiny" >/dev/null
env -u LD_LIBRARY_PATH "$work/prefix/bin/rho_model" info "$work/tiny" | grep -q '"parameters": 158016'
echo "installed tools run"
