#!/usr/bin/env bash
# One device call (~7-9 minutes): what a kernel boundary costs (bench/probes/boundary_cost.py), the step chain
# (decode_kernels.StepChain) against the shipped step (twice each, tokens checked), then
#   on an H200: the GEMV tiles timed there and issue 9's batch-1 greedy cells, with the chain on if it won;
#   on an H100: the CUDA tests of the kernels and graph paths with the chain on, and the step's timeline.
# Usage: bash bench/probes/chain_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
timeout 90 python bench/probes/boundary_cost.py 2>&1 | grep -v -i warn | tee "$out/boundary_cost.txt"
timeout 200 python bench/probes/step_variants.py "as shipped" "step chain" "as shipped (again: noise)" \
  "step chain (again: noise)" 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_variants_chain.txt"
# the chain wins if its best run beats the shipped step's best, with graph == eager and the same tokens
chain=$(python - "$out/step_variants_chain.txt" <<'PY'
import re, sys
best = {"as shipped": 0.0, "step chain": 0.0}
for line in open(sys.argv[1]):
    m = re.match(r"(as shipped|step chain).*?([\d.]+) tokens/s.*graph == eager (\w+); tokens == first variant's (\w+)", line)
    if m and m.group(3) == m.group(4) == "True":
        best[m.group(1)] = max(best[m.group(1)], float(m.group(2)))
print(1 if best["step chain"] > best["as shipped"] else 0)
PY
)
echo "GENPLUG_STEP_CHAIN=$chain for what follows" | tee -a "$out/device.txt"
export GENPLUG_STEP_CHAIN=$chain
if [ "$h200" = 1 ]; then
  timeout 170 python bench/probes/gemv_retune.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/gemv_retune.txt"
  timeout 150 python bench/gpu_decode.py --batches 1 --repeats 2 --cells "static+compile,native (static; default" \
    2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
else
  GENPLUG_STEP_CHAIN=1 timeout 200 python -m pytest -q -x tests/plugins/models/test_decode_kernels.py \
    tests/test_graphed_forward.py tests/test_graph_loop.py tests/test_graph_loop_stop_strings.py \
    tests/test_prefill_graph.py -p no:cacheprovider 2>&1 | tail -5 | tee "$out/cuda_tests_chain.txt"
  timeout 90 python bench/probes/step_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_timeline.txt"
fi
