#!/usr/bin/env bash
# One device call (~8 minutes on an H100): the step variants (bench/probes/step_variants.py); batch-64
# native greedy with PDL off and on (the 2026-12-05 drop from 28.4k to 23.9k tokens/s); the search for
# the prefill graph's illegal memory access (core/prefill_graph.py: the probe, then with
# CUDA_LAUNCH_BLOCKING=1 for the failing kernel's traceback, without PDL, and with interleaved
# transformers calls); the breakdown of one batch-1 call. Writes each part to $OUT.
set -u
out=${OUT:-probe_out}
mkdir -p "$out"
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$out/device.txt"
timeout 100 python -m pytest -q -x -p no:cacheprovider tests/test_graph_loop.py tests/test_prefill_graph.py \
    tests/plugins/models/test_decode_kernels.py > "$out/cuda_tests.txt" 2>&1; tail -2 "$out/cuda_tests.txt"
timeout 150 python bench/probes/step_variants.py 2>&1 | grep -v Writing | tee "$out/variants.txt" | tail -10
for pdl in 0 1; do
  timeout 80 python bench/gpu_decode.py --batches 64 --modes greedy --cells "native (static; default" --pdl $pdl 2>&1 \
    | grep -E "^PDL|measured" | tee -a "$out/b64_pdl.txt"
done
probe() { timeout "$1" python bench/probes/prefill_graph_check.py "${@:2}" 2>&1 | grep -v Writing | tail -25; }
{
  probe 80 pdl-graph 1 1024 0
  CUDA_LAUNCH_BLOCKING=1 probe 100 pdl-graph-blocking 1 1024 0
  probe 80 nopdl-graph 0 1024 0
  probe 120 pdl-graph-hf 1 1024 1
} > "$out/prefill_probe.txt" 2>&1
grep -E "OK|FAILED|Error|error" "$out/prefill_probe.txt" | head -30
timeout 90 python bench/probes/loop_breakdown.py > "$out/breakdown.txt" 2>&1; grep -E "^(greedy|sampling):" "$out/breakdown.txt"
