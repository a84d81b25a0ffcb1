#!/usr/bin/env bash
# One device call (~8 minutes) for the issue-9 closing table on whatever card the call gets: batch 1 with
# every cell the issue names (transformers dynamic and static+compile, genplug native and on the
# transformers model), then batch 16 and 64 against transformers' static+compile, then the CUDA tests of
# the decode and bookkeeping kernels. Each part goes to $OUT as it finishes (a cut-short call keeps the
# first). Usage: bash bench/probes/closing_table.sh
source "$(dirname "$0")/device_setup.sh"
timeout 260 python bench/gpu_decode.py --batches 1 \
  --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default,hf model (dynamic; default" \
  2>&1 | grep -v Writing > "$out/gpu_decode_b1.txt"; tail -16 "$out/gpu_decode_b1.txt"
timeout 250 python bench/gpu_decode.py --batches 16,64 --repeats 2 \
  --cells "static+compile,native (static; default,hf model (static; default" 2>&1 | grep -v Writing \
  > "$out/gpu_decode_b16_64.txt"; tail -13 "$out/gpu_decode_b16_64.txt"
timeout 60 python -m pytest -q -x -p no:cacheprovider tests/test_loop_kernels.py \
  tests/plugins/models/test_decode_kernels.py > "$out/cuda_tests.txt" 2>&1; tail -2 "$out/cuda_tests.txt"
