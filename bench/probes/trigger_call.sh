#!/usr/bin/env bash
# One device call (~5 minutes): on an H200 -- the issue's own card -- issue 9's table first; on either, when each
# fused kernel lets the next one launch (trigger_variants.py) and the kernels' CUDA tests.
# Usage: bash bench/probes/trigger_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
out="$(cd "$out" && pwd)"
[ $h200 = 1 ] && bash "$here/b1_b16_table.sh" && source "$here/device_setup.sh" > /dev/null
timeout 240 python bench/probes/trigger_variants.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/trigger_variants.txt"
timeout 150 python -m pytest -q -p no:cacheprovider tests/plugins/models/test_decode_kernels.py tests/test_graph_loop.py \
  2>&1 | tail -2 | tee "$out/cuda_tests.txt"
exit 0
