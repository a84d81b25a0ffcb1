#!/usr/bin/env bash
# First device call for the persistent launch (~9 minutes; 2026-12-05, ninth session): its compile, the
# chained halves against the step's kernels (bench/probes/persistent_mlp.py), the whole batch-1 step with and
# without it, greedy graph == eager checked (bench/probes/step_variants.py), then issue 9's batch-1 table
# (bench/gpu_decode.py) with the persistent launch on where step_variants found it fastest, else off.
# Usage: bash bench/probes/persistent_first.sh
source "$(dirname "$0")/device_setup.sh"
timeout 40 python bench/probes/persistent_mlp.py --compile-only 2>&1 | grep -v -i warn | tee "$out/persistent_mlp.txt"
timeout 80 python bench/probes/persistent_mlp.py 2>&1 | grep -v -i warn | tee -a "$out/persistent_mlp.txt"
timeout 170 python bench/probes/step_variants.py "as shipped" "persistent MLP, next layer's q/k/v apart" "persistent MLP" \
  2>&1 | grep -v -i warn | tee "$out/step_variants.txt"
persistent=0
grep -q "fastest with graph == eager: persistent" "$out/step_variants.txt" && persistent=1
echo "batch-1 table with --persistent-mlp $persistent"
timeout 240 python bench/gpu_decode.py --batches 1 --repeats 2 --persistent-mlp $persistent \
  --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -12 "$out/gpu_decode_b1.txt"
