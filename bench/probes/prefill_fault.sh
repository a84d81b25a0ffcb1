#!/usr/bin/env bash
# One device call: the step variants (bench/probes/step_variants.py), then the search for the prefill graph's illegal memory access (core/prefill_graph.py): the probe
# with and without PDL and interleaved transformers calls, once with CUDA_LAUNCH_BLOCKING=1 for the
# failing kernel's traceback, compute-sanitizer where the machine has it; then the breakdown of one
# batch-1 call with its per-kernel table. Writes each part to $OUT.
set -u
out=${OUT:-probe_out}
mkdir -p "$out"
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$out/device.txt"
timeout 150 python bench/probes/step_variants.py 2>&1 | grep -v Writing | tee "$out/variants.txt" | tail -9
probe() { timeout "$1" python bench/probes/prefill_graph_check.py "${@:2}" 2>&1 | grep -v Writing | tail -25; }
{
  probe 90 pdl-graph 1 1024 0
  probe 90 nopdl-graph 0 1024 0
  CUDA_LAUNCH_BLOCKING=1 probe 120 pdl-graph-blocking 1 1024 0
  probe 150 pdl-graph-hf 1 1024 1
  probe 90 pdl-nograph 1 0 0
} > "$out/prefill_probe.txt" 2>&1
grep -E "OK|FAILED|Error|error" "$out/prefill_probe.txt" | head -30
if command -v compute-sanitizer >/dev/null; then echo "compute-sanitizer found"; else echo "no compute-sanitizer"; fi
timeout 120 python bench/probes/loop_breakdown.py > "$out/breakdown.txt" 2>&1; grep -E "^(greedy|sampling):" "$out/breakdown.txt"
