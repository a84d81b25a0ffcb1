#!/usr/bin/env bash
# One device call after a change of kernel defaults: the batch-1, 16 and 64 rows that the targets
# name (transformers static+compile, genplug native and the transformers model through its twin,
# greedy and sampling), then the breakdown of one batch-1 call. Writes each part to $OUT.
source "$(dirname "$0")/device_setup.sh"
cells="static+compile,native (static; default,hf model (static; default"
timeout 150 python bench/gpu_decode.py --batches 1 --cells "$cells" 2>&1 | grep -v Writing | tee "$out/gpu_decode_b1.txt"
timeout 270 python bench/gpu_decode.py --batches 16,64 --cells "$cells" 2>&1 | grep -v Writing | tee "$out/gpu_decode_b16_64.txt"
timeout 120 python bench/probes/loop_breakdown.py > "$out/breakdown.txt" 2>&1; grep -E "^(greedy|sampling):" "$out/breakdown.txt"
