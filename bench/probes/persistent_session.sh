#!/usr/bin/env bash
# Device call 1 of 2 (~5 minutes): do the persistent kernels hold on a GPU? Whether the device's Triton
# pipelines weight tiles across a wait (bench/probes/pipelined_spin_compile.py, compile only); a chain of 16
# matrices of 2048 x 2048 as one persistent launch against chained GEMV launches
# (bench/probes/persistent_chain.py: rows or blocks per program, tiles of 16-64 rows, each with and without
# the waits, one process each); then each layer's second half as one persistent launch against the step's
# kernels, with one launch's timeline and a sweep of tiles and depths (bench/probes/persistent_mlp.py).
# Call 2: bash bench/probes/persistent_step_session.sh. Usage: bash bench/probes/persistent_session.sh
source "$(dirname "$0")/device_setup.sh"
for stages in 4 8; do
  timeout 60 python bench/probes/pipelined_spin_compile.py --stages $stages 2>&1 | grep -v -i warn | tee -a "$out/pipelined_spin.txt"
done
timeout 60 python bench/probes/persistent_chain.py --compile-only 2>&1 | grep -v -i warn | tee "$out/persistent_chain.txt"
for variant in -1 0 1 2 3 4; do  # one process each: a variant that deadlocks is killed alone
  timeout 45 python bench/probes/persistent_chain.py --variant $variant 2>&1 | grep -v -i warn | tee -a "$out/persistent_chain.txt"
done
timeout 30 python bench/probes/persistent_mlp.py --compile-only 2>&1 | grep -v -i warn | tee "$out/persistent_mlp.txt"
timeout 180 python bench/probes/persistent_mlp.py --sweep 2>&1 | grep -v -i warn | tee -a "$out/persistent_mlp.txt"
