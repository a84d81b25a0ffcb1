#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, eighteenth session; ~4-9 minutes). No H200 came in the
# seventeenth or eighteenth sessions, so the re-tuned GEMV tiles (sixteenth session, H100s) have never run on the
# issue's own card. On an H200: the GEMV tiles timed there (the step under the old, shipped and best-there tiles)
# and issue 9's batch-1 greedy cells against transformers' static + compile. On either card: the small kernels'
# warps in the step (add+norm 4 / 8 / 32 against 16, attention 2 / 8 against 4; never varied in the step before).
# Usage: bash bench/probes/next_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
if [ "$h200" = 1 ]; then
  timeout 170 python bench/probes/gemv_retune.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/gemv_retune.txt"
  timeout 150 python bench/gpu_decode.py --batches 1 --repeats 2 --cells "static+compile,native (static; default" \
    2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
fi
timeout 220 python bench/probes/step_variants.py "as shipped" "add+norm 4 warps" "add+norm 8 warps" "add+norm 32 warps" \
  "attention 2 warps" "attention 8 warps" "as shipped (again: noise)" 2>&1 | grep -v -i -e warn -e Writing \
  | tee "$out/step_variants_warps.txt"
