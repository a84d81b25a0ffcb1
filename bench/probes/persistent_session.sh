#!/usr/bin/env bash
# One device call (~7 minutes): does the persistent-step idea hold on a GPU? First whether the device's
# Triton pipelines weight tiles across a wait as Triton 3.9 does (bench/probes/pipelined_spin_compile.py,
# compile only), then a chain of 16 matrices of 2048 x 2048 as one persistent launch against chained
# GEMV launches (bench/probes/persistent_chain.py: rows or blocks per program, tiles of 16-64 rows,
# each with and without the waits), then sampling's kernels per token
# with the top-k's rounds of chunks (bench/probes/sampling_kernels.py). Usage: bash bench/probes/persistent_session.sh
source "$(dirname "$0")/device_setup.sh"
for stages in 4 8; do
  timeout 60 python bench/probes/pipelined_spin_compile.py --stages $stages 2>&1 | grep -v -i warn | tee -a "$out/pipelined_spin.txt"
done
timeout 60 python bench/probes/persistent_chain.py --compile-only 2>&1 | grep -v -i warn | tee "$out/persistent_chain.txt"
for variant in -1 0 1 2 3 4; do  # one process each: a variant that deadlocks is killed alone
  timeout 45 python bench/probes/persistent_chain.py --variant $variant 2>&1 | grep -v -i warn | tee -a "$out/persistent_chain.txt"
done
# the second half of each decoder layer (output projection, add+norm, gate/up, down) as one persistent
# launch per layer against the step's kernels (bench/probes/persistent_mlp.py)
timeout 30 python bench/probes/persistent_mlp.py --compile-only 2>&1 | grep -v -i warn | tee "$out/persistent_mlp.txt"
timeout 150 python bench/probes/persistent_mlp.py --sweep 2>&1 | grep -v -i warn | tee -a "$out/persistent_mlp.txt"
# and in the whole batch-1 decode step (GENPLUG_PERSISTENT_MLP=1's switch), greedy graph == eager checked
timeout 200 python bench/probes/step_variants.py "as shipped" "persistent MLP, next layer's q/k/v apart" "persistent MLP" \
  "as shipped (again: noise)" 2>&1 \
  | grep -v -i warn | tee "$out/step_variants.txt"
# where the step's time goes with it (per kernel, critical path), against the same without it
timeout 60 python bench/probes/step_timeline.py --persistent-mlp 2>&1 | grep -v -i warn | tee "$out/step_timeline.txt"
timeout 60 python bench/probes/step_timeline.py 2>&1 | grep -v -i warn | tee -a "$out/step_timeline.txt"
timeout 90 python bench/probes/sampling_kernels.py 2>&1 | grep -v -e Writing -e warn | tee "$out/sampling_kernels.txt"
# Next, if "persistent MLP" above ran faster with graph == eager: the issue's batch-1 table with it, in one run
# against transformers: python bench/gpu_decode.py --batches 1 --repeats 2 --persistent-mlp 1 \
#   --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default"
