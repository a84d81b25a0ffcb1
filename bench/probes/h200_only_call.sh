#!/usr/bin/env bash
# A short device call (~5-6 minutes). On an H200, the issue's own card: the GEMV tiles timed there (the step under
# the old, shipped and best-there tiles) and issue 9's batch-1 greedy cells against transformers' static + compile.
# On an H100: the add+norm kernel's warps in the step (bench/probes/step_variants.py).
# Usage: bash bench/probes/h200_only_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
if [ "$h200" != 1 ]; then
  timeout 200 python bench/probes/step_variants.py "as shipped" "add+norm 4 warps" "add+norm 8 warps" \
    "add+norm 32 warps" "as shipped (again: noise)" 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_variants_norm_warps.txt"
  exit 0
fi
timeout 170 python bench/probes/gemv_retune.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/gemv_retune.txt"
timeout 150 python bench/gpu_decode.py --batches 1 --repeats 2 --cells "static+compile,native (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
