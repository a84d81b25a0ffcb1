#!/usr/bin/env bash
# The ninth session's last device call (2026-12-05): on an H200 -- the issue's own card, never measured
# before -- issue 9's table as shipped (bench/probes/b1_b16_table.sh); on an H100 -- four hosts measured
# already -- where the whole step's time goes with the persistent launch on and off (in the step it cost
# ~45 us a layer more than the kernels it replaces, where the chained probe said ~22).
# Usage: bash bench/probes/last_call.sh
here="$(dirname "$0")"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  bash "$here/b1_b16_table.sh"
else
  source "$here/device_setup.sh"
  timeout 90 python bench/probes/step_timeline.py --persistent-mlp 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_timeline.txt"
  timeout 90 python bench/probes/step_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee -a "$out/step_timeline.txt"
fi
