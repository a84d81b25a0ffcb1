#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, sixteenth session; ~6-9 minutes). The sixteenth
# session re-tuned the GEMV tiles on H100s (bench/probes/gemv_retune.py) and ran issue 9's table on an H200
# only with the tiles before that. On an H200: the GEMV tiles timed there (the step under the old, shipped
# and best-there tiles), then the whole table. On an H100: the CUDA tests of the kernels and graph paths
# under the new tiles (the sixteenth session's last call ran out of time after 30 of them passed), then the
# graphed forward's cells.
# Usage: bash bench/probes/next_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
if [ "$h200" = 1 ]; then
  timeout 170 python bench/probes/gemv_retune.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/gemv_retune.txt"
  bash "$here/b1_b16_table.sh"
else
  timeout 260 python -m pytest -q -p no:cacheprovider tests/plugins/models/test_decode_kernels.py tests/test_graphed_forward.py \
    tests/test_graph_loop.py tests/test_graph_loop_stop_strings.py tests/test_prefill_graph.py > "$out/cuda_tests.txt" 2>&1
  tail -2 "$out/cuda_tests.txt"
  timeout 260 python bench/probes/graphed_forward_speed.py 2>&1 | grep -v -i -e warn -e Writing \
    | tee "$out/graphed_forward_speed.txt"
fi
