#!/usr/bin/env bash
# The thirteenth session's first device call (~8 minutes). On an H200 -- the issue's own card, never measured
# with the current kernels -- issue 9's table as shipped (b1_b16_table.sh) first. On either: the output head
# through genplug's GEMV against cuBLAS (head_variants.py), the CUDA tests of the kernels the change touches,
# and on an H100 issue 9's batch-1 cells.
# Usage: bash bench/probes/head_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
out="$(cd "$out" && pwd)"
if [ $h200 = 1 ]; then
  bash "$here/b1_b16_table.sh"
  source "$here/device_setup.sh" > /dev/null
  timeout 200 python bench/probes/head_variants.py --batch-1-only 2>&1 | grep -v -i -e warn -e Writing | tee "$out/head_variants.txt"
else
  timeout 260 python bench/probes/head_variants.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/head_variants.txt"
  timeout 150 python -m pytest -q -p no:cacheprovider tests/plugins/models/test_decode_kernels.py \
    tests/test_vocab_kernels.py tests/test_graph_loop.py 2>&1 | tail -5 | tee "$out/cuda_tests.txt"
  bash "$here/b1_b16_table.sh" --batch-1-only
fi
exit 0
