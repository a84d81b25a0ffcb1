#!/usr/bin/env bash
# A short device call for the last minutes of a session's device time (~4 minutes): on an H200 the batch-1
# cells of issue 9's table; on an H100 (whose batch-1 cells were just measured) the batch 16/64 rows.
# Usage: bash bench/probes/last_h200_try.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  bash "$here/b1_b16_table.sh" --batch-1-only
else
  timeout 150 python bench/gpu_decode.py --batches 16,64 --repeats 2 --cells "static+compile,native (static; default" \
    2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b16_64.txt"; tail -10 "$out/gpu_decode_b16_64.txt"
fi
