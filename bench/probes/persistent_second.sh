#!/usr/bin/env bash
# Second device call for the persistent launch (~5 minutes; 2026-12-05, ninth session), after the first
# (bench/probes/persistent_first.sh) measured it at 80 us a layer against 46 for the step's kernels: with one
# poller per program and the sum of squares read 32 values a round trip -- the chain and its timeline, a sweep
# of tiles, depths and warps (bench/probes/persistent_mlp.py --sweep), its CUDA tests, and the whole step.
# Usage: bash bench/probes/persistent_second.sh
source "$(dirname "$0")/device_setup.sh"
timeout 220 python bench/probes/persistent_mlp.py --sweep 2>&1 | grep -v -i warn | tee "$out/persistent_mlp.txt"
timeout 200 python bench/probes/step_variants.py "as shipped" "persistent MLP" "persistent MLP, down 8 deep" "persistent MLP, down 8 deep, 8 warps" "persistent MLP, 5 deep, down 12, 8 warps" \
  2>&1 | grep -v -i warn | tee "$out/step_variants.txt"
timeout 70 python -m pytest -q -x -p no:cacheprovider tests/plugins/models/test_persistent_mlp.py 2>&1 | tail -5 | tee "$out/persistent_tests.txt"
