#!/usr/bin/env bash
# A session's first device call (fourteenth session, 2026-12-06): on an H200 -- the issue's own card, never lent
# so far -- issue 9's whole table (b1_b16_table.sh, ~7-9 minutes); on an H100 only the CUDA tests of the kernels,
# the graph loop and the caches (~2-3 minutes), so the call checks the current code on a GPU either way.
# Usage: bash bench/probes/h200_or_tests.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
if [ "$h200" = 1 ]; then
  bash "$here/b1_b16_table.sh"
else
  timeout 300 python -m pytest -q -x -p no:cacheprovider tests/test_graph_loop.py tests/test_vocab_kernels.py tests/test_loop_kernels.py \
    tests/plugins/processors/test_truncation_kernels.py tests/plugins/models/test_decode_kernels.py \
    tests/plugins/caches/test_cache_cuda.py > "$out/cuda_tests.txt" 2>&1; tail -3 "$out/cuda_tests.txt"
fi
