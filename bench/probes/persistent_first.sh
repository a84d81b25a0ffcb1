#!/usr/bin/env bash
# First device call for the persistent launch (~6 minutes; 2026-12-05, ninth session): its compile, its
# CUDA tests, the chained halves against the step's kernels (bench/probes/persistent_mlp.py), then the whole
# batch-1 step with and without it, greedy graph == eager checked (bench/probes/step_variants.py).
# Usage: bash bench/probes/persistent_first.sh
source "$(dirname "$0")/device_setup.sh"
timeout 40 python bench/probes/persistent_mlp.py --compile-only 2>&1 | grep -v -i warn | tee "$out/persistent_mlp.txt"
timeout 90 python -m pytest -q -x -p no:cacheprovider tests/plugins/models/test_persistent_mlp.py 2>&1 | tail -15 | tee "$out/persistent_tests.txt"
timeout 120 python bench/probes/persistent_mlp.py 2>&1 | grep -v -i warn | tee -a "$out/persistent_mlp.txt"
timeout 200 python bench/probes/step_variants.py "as shipped" "persistent MLP, next layer's q/k/v apart" "persistent MLP" \
  "as shipped (again: noise)" 2>&1 | grep -v -i warn | tee "$out/step_variants.txt"
