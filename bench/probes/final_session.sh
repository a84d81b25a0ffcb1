#!/usr/bin/env bash
# One device call (~9.5 minutes) closing 2026-12-05's seventh session: the issue-9 batch-1 cells in one
# process (transformers dynamic and static+compile, genplug native and on the transformers model, greedy
# and sampling), the CUDA tests of the decode and bookkeeping kernels, the attention tile for heads of
# 256 at batch 1 (bench/probes/head_sizes.py --one-row), then batch 16 and 64 for genplug native against
# transformers' static+compile with what time is left. Each part goes to $OUT as it finishes.
# Usage: bash bench/probes/final_session.sh
source "$(dirname "$0")/device_setup.sh"
timeout 240 python bench/gpu_decode.py --batches 1 --repeats 2 \
  --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -12 "$out/gpu_decode_b1.txt"
timeout 130 python -m pytest -q -p no:cacheprovider tests/test_loop_kernels.py \
  tests/plugins/models/test_decode_kernels.py > "$out/cuda_tests.txt" 2>&1; tail -3 "$out/cuda_tests.txt"
timeout 80 python bench/probes/head_sizes.py --one-row 2>&1 | grep -v -e Writing -e warn | tee "$out/head_sizes.txt"
timeout 120 python bench/gpu_decode.py --batches 16,64 --repeats 2 --cells "static+compile,native (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b16_64.txt"; tail -10 "$out/gpu_decode_b16_64.txt"
