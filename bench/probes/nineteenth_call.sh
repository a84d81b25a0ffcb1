#!/usr/bin/env bash
# The nineteenth session's second device call (2026-12-06; ~5-8 minutes). The first (next_call.sh) found on an
# H200 batch-1 greedy at 1,151.0 tokens/s, 66.8% of the limit, with the small GEMVs alone at 63-76% of the copy
# bandwidth. Here: the step with each GEMV program keeping 2 weight tiles in flight and/or its input loaded an
# iteration ahead, the output head's best tile there and the add+norm's 4 warps (step_variants.py, tokens checked
# against the shipped step's), then where the step's time goes as shipped and with 2 tiles ahead.
# Usage: bash bench/probes/nineteenth_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
timeout 250 python bench/probes/step_variants.py "as shipped" "GEMV 2 tiles ahead" "GEMV input ahead" \
  "GEMV 2 tiles + input ahead" "add+norm 4 warps + head (16, 256, 4, 2, 16)" "add+norm 4 warps + head + 2 tiles ahead" \
  "output + down 8 columns a tile (4 splits)" "2 ahead + q/k/v (32, 128, 4, 2, 8)" "as shipped (again: noise)" 2>&1 \
  | grep -v -i -e warn -e Writing | tee "$out/step_variants_ahead.txt"
for flags in "" "--ahead 2"; do
  timeout 45 python bench/probes/step_timeline.py $flags 2>&1 | grep -v -i -e warn -e Writing | head -40
done | tee "$out/step_timeline.txt"
