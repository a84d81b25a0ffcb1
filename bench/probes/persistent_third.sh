#!/usr/bin/env bash
# Third device call for the persistent launch (~4 minutes; 2026-12-05, ninth session): lean loops (each
# program asks L2 for its first tiles, waits, computes its inputs once, then loops over weight tiles only)
# against waits in the loops -- the chain and one lean timeline (bench/probes/persistent_mlp.py), the whole
# step (bench/probes/step_variants.py), and where the step's time goes with it (bench/probes/step_timeline.py).
# Usage: bash bench/probes/persistent_third.sh
source "$(dirname "$0")/device_setup.sh"
timeout 100 python bench/probes/persistent_mlp.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/persistent_mlp.txt"
timeout 120 python bench/probes/step_variants.py "as shipped" "persistent MLP" "persistent MLP, waits in the loops" \
  2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_variants.txt"
timeout 70 python bench/probes/step_timeline.py --persistent-mlp 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_timeline.txt"
