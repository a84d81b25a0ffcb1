#!/usr/bin/env bash
# Device call 2 of 2 (~4 minutes; call 1: bench/probes/persistent_session.sh): the whole batch-1 decode step
# with the persistent launch (GENPLUG_PERSISTENT_MLP=1's switch) -- without and with the next layer's
# add+norm and q/k/v in it, greedy graph == eager checked (bench/probes/step_variants.py) -- where the step's
# time goes with and without it (bench/probes/step_timeline.py), and sampling's kernels per token with the
# top-k's rounds of chunks (bench/probes/sampling_kernels.py). Usage: bash bench/probes/persistent_step_session.sh
source "$(dirname "$0")/device_setup.sh"
timeout 200 python bench/probes/step_variants.py "as shipped" "persistent MLP, next layer's q/k/v apart" "persistent MLP" \
  "as shipped (again: noise)" 2>&1 | grep -v -i warn | tee "$out/step_variants.txt"
timeout 60 python bench/probes/step_timeline.py --persistent-mlp 2>&1 | grep -v -i warn | tee "$out/step_timeline.txt"
timeout 60 python bench/probes/step_timeline.py 2>&1 | grep -v -i warn | tee -a "$out/step_timeline.txt"
timeout 90 python bench/probes/sampling_kernels.py 2>&1 | grep -v -e Writing -e warn | tee "$out/sampling_kernels.txt"
# Next, if "persistent MLP" above ran faster with graph == eager: the issue's batch-1 table with it, in one run
# against transformers: python bench/gpu_decode.py --batches 1 --repeats 2 --persistent-mlp 1 \
#   --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default"
