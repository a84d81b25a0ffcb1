#!/usr/bin/env bash
# One device call (~8 minutes on an H100): CUDA tests of the new pieces; the step variants
# (bench/probes/step_variants.py); batch-64 native greedy with PDL off and on (the 2026-12-05 drop
# from 28.4k to 23.9k tokens/s); the prefill graph's illegal-memory-access sequence
# (bench/probes/prefill_graph_check.py) without and with interleaved transformers static+compile
# calls -- with CUDA_LAUNCH_BLOCKING=1 and without PDL only if it fails; then the batch-1 table with
# the prefill graph on. Writes each part to $OUT.
source "$(dirname "$0")/device_setup.sh"
timeout 90 python -m pytest -q -x -p no:cacheprovider tests/test_graph_loop.py tests/test_prefill_graph.py \
    tests/plugins/models/test_decode_kernels.py -k "cublas or prefill or unfused_ops or inside_the_table or share_the_kernels" \
    > "$out/cuda_tests.txt" 2>&1; tail -1 "$out/cuda_tests.txt"
timeout 130 python bench/probes/step_variants.py 2>&1 | grep -v Writing | tee "$out/variants.txt" | tail -10
for pdl in 0 1; do
  timeout 60 python bench/gpu_decode.py --batches 64 --modes greedy --cells "native (static; default" --pdl $pdl \
    --repeats 2 2>&1 | grep -E "^PDL|measured" | tee -a "$out/b64_pdl.txt"
done
probe() { timeout "$1" python bench/probes/prefill_graph_check.py "${@:2}" 2>&1 | grep -v Writing | tail -25; }
{
  probe 60 pdl-graph 1 1024 0
  probe 110 pdl-graph-hf 1 1024 1
} > "$out/prefill_probe.txt" 2>&1
grep -E "OK|FAILED|Error|error" "$out/prefill_probe.txt" | head -20
if ! grep -q "pdl-graph-hf OK" "$out/prefill_probe.txt"; then
  { CUDA_LAUNCH_BLOCKING=1 probe 120 pdl-graph-hf-blocking 1 1024 1; probe 110 nopdl-graph-hf 0 1024 1; } \
    > "$out/prefill_probe_more.txt" 2>&1
  grep -E "OK|FAILED|Error|error" "$out/prefill_probe_more.txt" | head -20
fi
GENPLUG_PREFILL_GRAPH=1 timeout 150 python bench/gpu_decode.py --batches 1 \
  --cells "static+compile,native (static; default,hf model (static; default" 2>&1 | grep -v Writing \
  | tee "$out/gpu_decode_b1_prefill_graph.txt" | tail -12
