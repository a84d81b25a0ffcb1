#!/usr/bin/env bash
# One device call (twelfth session, ~4 minutes; ~10 on an H200, whose issue 9 table comes first): batch 16
# and 64 under the fused kernels as shipped, the plain PyTorch step and other several-rows attention tiles
# (rows_variants.py).
# Usage: bash bench/probes/rows_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
out="$(cd "$out" && pwd)"
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && bash "$here/b1_b16_table.sh"
timeout 300 python bench/probes/rows_variants.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/rows_variants.txt"
exit 0
