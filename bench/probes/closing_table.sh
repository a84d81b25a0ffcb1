#!/usr/bin/env bash
# One device call (~9 minutes) for the issue-9 closing table on whatever card the call gets: every cell
# the issue names (transformers dynamic and static+compile, genplug native and on the transformers model
# through its native twin) at batch 1, 16 and 64, greedy and sampling, in one process; then the CUDA
# tests of the decode and bookkeeping kernels. Each cell's line reaches $OUT as it is measured (a
# cut-short call keeps those). Usage: bash bench/probes/closing_table.sh
source "$(dirname "$0")/device_setup.sh"
timeout 470 python bench/gpu_decode.py --batches 1,16,64 --repeats 2 \
  --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode.txt"; tail -28 "$out/gpu_decode.txt"
timeout 100 python -m pytest -q -x -p no:cacheprovider tests/test_loop_kernels.py \
  tests/plugins/models/test_decode_kernels.py > "$out/cuda_tests.txt" 2>&1; tail -2 "$out/cuda_tests.txt"
