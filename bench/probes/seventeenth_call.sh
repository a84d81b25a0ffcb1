#!/usr/bin/env bash
# The seventeenth session's device call (~9 minutes): the output and down GEMVs adding the residual
# (fused_step.RESIDUAL_IN_GEMV, no add+norm kernels left in the step) under several tiles against the
# shipped step; then, on an H200, issue 9's batch-1 table with the fastest of them (as shipped if none won).
# Usage: bash bench/probes/seventeenth_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
git log --oneline -1 | tee -a "$out/device.txt"
timeout 300 python bench/probes/step_variants.py "as shipped" "residual in the GEMVs (8, 512, 4)" \
  "residual in the GEMVs (16, 256, 8)" "residual in the GEMVs (16, 512, 8)" "residual in the GEMVs (8, 256, 4)" \
  "residual in the GEMVs (8, 1024, 8)" "residual in the GEMVs (4, 512, 4)" "as shipped (again: noise)" 2>&1 \
  | grep -v -i -e warn -e Writing | tee "$out/step_variants.txt"
# "fastest with graph == eager: residual in the GEMVs (8, 512, 4)" -> --residual-in-gemv 8,512,4,2,1
tile=$(sed -n 's/^fastest with graph == eager: residual in the GEMVs (\([0-9]*\), \([0-9]*\), \([0-9]*\))$/\1,\2,\3,2,1/p' "$out/step_variants.txt")
flag=()
[ -n "$tile" ] && flag=(--residual-in-gemv "$tile")
if [ "$h200" = 1 ]; then
  timeout 250 python bench/gpu_decode.py --batches 1 --repeats 2 "${flag[@]}" \
    --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default" \
    2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -16 "$out/gpu_decode_b1.txt"
fi
