#!/usr/bin/env bash
# One device call (twelfth session, ~9 minutes): on an H200 issue 9's table first (b1_b16_table.sh); then batch
# 4/16/64 under the rows attention settings and the plain PyTorch step (rows_variants.py), and on an H100 issue
# 9's batch 16/64 rows against transformers' static+compile.
# Usage: bash bench/probes/rows_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
out="$(cd "$out" && pwd)"
[ $h200 = 1 ] && bash "$here/b1_b16_table.sh"
timeout 330 python bench/probes/rows_variants.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/rows_variants.txt"
if [ $h200 = 0 ]; then
  timeout 200 python bench/gpu_decode.py --batches 16,64 --repeats 2 --cells "static+compile,native (static; default" \
    2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b16_64.txt"; tail -10 "$out/gpu_decode_b16_64.txt"
fi
exit 0
