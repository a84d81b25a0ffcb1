#!/usr/bin/env bash
# One device call (~6-9 minutes): the kernel-boundary probe, the step chain (decode_kernels.StepChain) against
# the shipped step, and the CUDA tests of the kernels and graph paths with the chain on.
# Usage: bash bench/probes/chain_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
timeout 100 python bench/probes/boundary_cost.py 2>&1 | grep -v -i warn | tee "$out/boundary_cost.txt"
timeout 200 python bench/probes/step_variants.py "as shipped" "step chain" "as shipped (again: noise)" \
  "step chain (again: noise)" 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_variants_chain.txt"
GENPLUG_STEP_CHAIN=1 timeout 200 python -m pytest -q -x tests/plugins/models/test_decode_kernels.py \
  tests/test_graphed_forward.py tests/test_graph_loop.py tests/test_graph_loop_stop_strings.py \
  tests/test_prefill_graph.py -p no:cacheprovider 2>&1 | tail -5 | tee "$out/cuda_tests_chain.txt"
