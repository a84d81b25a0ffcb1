#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, fourteenth session; ~4-9 minutes): on an H200 -- the
# issue's own card, never lent so far -- issue 9's whole table (b1_b16_table.sh); on an H100 the paths this session
# built and could not finish timing: the graphed forward's cells (output_scores now captures without a garbage
# collection; beam search through it; stop strings, which the whole-step graph checks since the fifteenth session)
# and the CUDA tests of the graph loop (stop strings included), graphed forward and prefill graph.
# Usage: bash bench/probes/next_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
if [ "$h200" = 1 ]; then
  bash "$here/b1_b16_table.sh"
else
  timeout 330 python bench/probes/graphed_forward_speed.py 2>&1 | grep -v -i -e warn -e Writing \
    | tee "$out/graphed_forward_speed.txt"
  timeout 200 python -m pytest -q -p no:cacheprovider tests/test_graphed_forward.py tests/test_graph_loop.py tests/test_graph_loop_stop_strings.py \
    tests/test_prefill_graph.py > "$out/cuda_tests.txt" 2>&1; tail -2 "$out/cuda_tests.txt"
fi
