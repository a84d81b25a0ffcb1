#!/usr/bin/env bash
# The nineteenth session's second device call (2026-12-06; ~3 minutes). The first (next_call.sh) found on an
# H200 batch-1 greedy at 1,151.0 tokens/s, 66.8% of the limit, with the small GEMVs alone at 63-76% of the copy
# bandwidth. Here: the step with each GEMV program keeping 2 weight tiles in flight and/or its input loaded an
# iteration ahead, the output head's best tile there, the add+norm's 4 warps, fewer splits (step_variants.py,
# tokens checked against the shipped step's); then issue 9's batch-1 genplug cells under that variant
# (transformers' static + compile: 428.6 tokens/s greedy in the first call; device time allows no more).
# Usage: bash bench/probes/nineteenth_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
timeout 95 python bench/probes/step_variants.py "as shipped" "GEMV 2 tiles ahead" \
  "add+norm 4 warps + head + 2 tiles ahead" "as shipped (again: noise)" 2>&1 \
  | grep -v -i -e warn -e Writing | tee "$out/step_variants_ahead.txt"
best=$(sed -n 's/^fastest with graph == eager: //p' "$out/step_variants_ahead.txt")
best=${best:-as shipped}
timeout 85 python bench/gpu_decode.py --batches 1 --repeats 2 --cells "native (static; default" \
  --variant "$best" 2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
