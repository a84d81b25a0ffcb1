#!/usr/bin/env bash
# The twelfth session's device call (~9 minutes): L2 prefetch of the next weights while memory is idle
# (fused_step.ATTENTION_L2_PREFETCH, GEMV_L2_PREFETCH_AFTER) against the step as shipped, and issue 9's
# table. On an H200 -- the issue's own card, never measured with the current kernels -- the table as
# shipped with batch 16/64 comes first and only the main variants follow; on an H100 the variants first,
# then the batch-1 native and transformers static+compile cells.
# Usage: bash bench/probes/twelfth_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
out="$(cd "$out" && pwd)"
variants() {
  timeout "$1" python bench/probes/step_variants.py "as shipped" "${@:2}" "as shipped (again: noise)" 2>&1 \
    | grep -v -i -e warn -e Writing | tee -a "$out/step_variants.txt"
}
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  bash "$here/b1_b16_table.sh"
  variants 150 "attention prefetches o + 16 MB gate/up (bulk)" "attention o + 16 MB, down next q/k/v (bulk)"
else
  variants 330 "attention prefetches o + 16 MB gate/up (bulk)" "attention prefetches o + 8 MB gate/up (bulk)" \
    "attention prefetches o to L2 (bulk)" "attention prefetches o + 16 MB gate/up (lines)" \
    "down GEMV prefetches next q/k/v after (bulk)" "output GEMV prefetches 16 MB gate/up after (bulk)" \
    "attention o + 16 MB, down next q/k/v (bulk)"
  timeout 170 python bench/gpu_decode.py --batches 1 --repeats 2 --cells "static+compile,native (static; default" \
    2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -8 "$out/gpu_decode_b1.txt"
fi
