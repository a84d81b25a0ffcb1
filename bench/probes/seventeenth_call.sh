#!/usr/bin/env bash
# The seventeenth session's device call (~9 minutes): the output and down GEMVs adding the residual
# (fused_step.RESIDUAL_IN_GEMV: the last split of each column tile adds; no add+norm kernels left in the
# step) under three split counts against the shipped step; then, on an H200, issue 9's batch-1 table with
# the fastest of them (as shipped if none won).
# Usage: bash bench/probes/seventeenth_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
git log --oneline -1 | tee -a "$out/device.txt"
timeout 300 python bench/probes/step_variants.py "as shipped" "residual added by the GEMVs' last split" \
  "... with 4 GEMV programs per SM" "... with 16 GEMV programs per SM" "as shipped (again: noise)" 2>&1 \
  | grep -v -i -e warn -e Writing | tee "$out/step_variants.txt"
flag=()
case "$(sed -n 's/^fastest with graph == eager: //p' "$out/step_variants.txt")" in
  "residual added by the GEMVs' last split") flag=(--residual-in-gemv) ;;
  "... with 4 GEMV programs per SM") flag=(--residual-in-gemv --gemv-per-sm 4) ;;
  "... with 16 GEMV programs per SM") flag=(--residual-in-gemv --gemv-per-sm 16) ;;
esac
if [ "$h200" = 1 ]; then
  timeout 250 python bench/gpu_decode.py --batches 1 --repeats 2 "${flag[@]}" \
    --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default" \
    2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -16 "$out/gpu_decode_b1.txt"
fi
