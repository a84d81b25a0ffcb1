#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, sixteenth session; ~6-9 minutes). The sixteenth
# session re-tuned the GEMV tiles on H100s (bench/probes/gemv_retune.py) and ran issue 9's table on an H200
# only with the tiles before that. On an H200: the GEMV tiles timed there (the step under the old, shipped
# and best-there tiles), then the batch-1 table. On an H100: the CUDA tests of the kernels and graph paths
# under the new tiles (the sixteenth session's last call ran out of time after 30 of them passed), then the
# graphed forward's cells. On either, first: the deferred norm (plugins/models/llama/deferred_norm.py, off by
# default) and attention with 4 splits against the shipped step.
# Usage: bash bench/probes/next_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
timeout 180 python bench/probes/step_variants.py "as shipped" "norm deferred to the GEMVs" "attention 4 splits" \
  "attention 4 splits x 64 slots" "as shipped (again: noise)" 2>&1 \
  | grep -v -i -e warn -e Writing | tee "$out/step_variants.txt"
if [ "$h200" = 1 ]; then
  timeout 170 python bench/probes/gemv_retune.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/gemv_retune.txt"
  bash "$here/b1_b16_table.sh" --batch-1-only  # the tiles change one-row steps only (batch 16 / 64: bench/results/sixteenth_session)
else
  timeout 190 python -m pytest -q -p no:cacheprovider tests/plugins/models/test_decode_kernels.py tests/plugins/models/test_deferred_norm.py tests/test_graphed_forward.py \
    tests/test_graph_loop.py tests/test_graph_loop_stop_strings.py tests/test_prefill_graph.py > "$out/cuda_tests.txt" 2>&1
  tail -2 "$out/cuda_tests.txt"
  timeout 170 python bench/probes/graphed_forward_speed.py 2>&1 | grep -v -i -e warn -e Writing \
    | tee "$out/graphed_forward_speed.txt"
fi
