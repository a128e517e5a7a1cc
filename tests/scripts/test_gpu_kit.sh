#!/usr/bin/env bash
# ctest gpu_kit_dry_run: the GPU kit from this build, run where there is no GPU. scripts/gpu_kit/build.sh bundles
# the build folder (KIT_FROM_BUILD) within its size limit (56 MiB) with every library resolved; run.sh exits 0,
# runs the parts that need no GPU (the environment report and its ldd check) and names each part it skipped and
# why. The end-to-end part is left out here (KIT_SKIP): it is the demo pipeline, tested by demo_gsm8k. The second
# command, paper.sh, skips its CUDA config with the reason and runs its CI-sized twin (configs/demo/
# continual-ci.yaml) on the CPU through the kit's tools, writing its summary and report to OUT.
#   tests/scripts/test_gpu_kit.sh BUILD_DIR PYTHON
set -euo pipefail
build=$(cd "$1" && pwd)
export PYTHON=$2
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
KIT_FROM_BUILD=$build KIT_DIR=$tmp/kit scripts/gpu_kit/build.sh > "$tmp/build.log" 2>&1 || {
  cat "$tmp/build.log"
  exit 1
}
tail -1 "$tmp/build.log"
rc=0
OUT=$tmp/out KIT_SKIP="e2e" KIT_SECONDS=120 scripts/gpu_kit/run.sh "$tmp/kit" > "$tmp/run.log" 2>&1 || rc=$?
cat "$tmp/run.log"
fail() {
  echo "FAIL: $*"
  exit 1
}
((rc == 0)) || fail "run.sh exited $rc"
grep -q "ldd: every library resolves" "$tmp/run.log" || fail "the kit's libraries do not all resolve"
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  for part in "tests\[cuda\]" topk score train profile sanitizer linear_ce generate sharded; do
    grep -q "=== SKIP $part: no CUDA device" "$tmp/run.log" || fail "part $part was not skipped with its reason"
  done
fi
grep -Eq "=== SKIP e2e: (in KIT_SKIP|the kit holds no GSM8K)" "$tmp/run.log" || fail "e2e was not skipped with its reason"
for f in kit.log env.txt; do [[ -s $tmp/out/$f ]] || fail "no $f in OUT"; done
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  OUT=$tmp/out scripts/gpu_kit/paper.sh "$tmp/kit" > "$tmp/paper.log" 2>&1 || fail "paper.sh without a GPU exited $?"
  grep -q "=== SKIP paper: no CUDA device" "$tmp/paper.log" || { cat "$tmp/paper.log"; fail "paper.sh did not skip its CUDA config"; }
fi
OUT=$tmp/out PAPER_CONFIG=configs/demo/continual-ci.yaml PAPER_OUT=$tmp/paper PAPER_SECONDS=300 \
  scripts/gpu_kit/paper.sh "$tmp/kit" > "$tmp/paper.log" 2>&1 || { cat "$tmp/paper.log"; fail "paper.sh (CI config) failed"; }
tail -3 "$tmp/paper.log"
"$PYTHON" -c 'import json, sys; s = json.load(open(sys.argv[1])); sys.exit(0 if "base" in s and s["final_target_loss_mean"]["slm"] > 0 else 1)' \
  "$tmp/out/paper_summary.json" || fail "paper.sh wrote no summary with the base model's figures"
[[ -s $tmp/out/report.html ]] || fail "paper.sh wrote no report.html"
echo PASS
