#!/usr/bin/env bash
# The twelfth session's last device call (~4 minutes): on an H200 -- the issue's own card -- issue 9's
# batch-1 table (the device time left fits no more); on an H100 the gate/up projection through genplug's
# GEMV under a few tiles against cuBLAS (step_variants.py).
# Usage: bash bench/probes/gate_up_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
out="$(cd "$out" && pwd)"
if [ $h200 = 1 ]; then
  bash "$here/b1_b16_table.sh" --batch-1-only
else
  timeout 230 python bench/probes/step_variants.py "as shipped" "gate/up GEMV" "gate/up GEMV (16, 256, 4, 2, 8)" \
    "gate/up GEMV (16, 256, 4, 2, 4)" "gate/up GEMV (32, 256, 4, 2, 8)" "gate/up GEMV (16, 512, 4, 2, 8)" \
    "as shipped (again: noise)" 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_variants_gate_up.txt"
fi
exit 0
