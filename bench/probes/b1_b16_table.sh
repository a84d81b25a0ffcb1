#!/usr/bin/env bash
# One device call (~6-9 minutes; batch 16/64 took over 120 s on a host whose transformers compiles slowly): issue 9's table as shipped -- the batch-1 cells in one process (transformers
# dynamic and static+compile, genplug native and on the transformers model, greedy and sampling), then batch 16
# and 64 for genplug native against transformers' static+compile (not with --batch-1-only).
# Usage: bash bench/probes/b1_b16_table.sh [--batch-1-only]
source "$(dirname "$0")/device_setup.sh"
timeout 240 python bench/gpu_decode.py --batches 1 --repeats 2 \
  --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
[ "${1:-}" = "--batch-1-only" ] && exit 0
timeout 300 python bench/gpu_decode.py --batches 16,64 --repeats 2 --cells "static+compile,native (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b16_64.txt"; tail -10 "$out/gpu_decode_b16_64.txt"
