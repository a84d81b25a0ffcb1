#!/usr/bin/env bash
# The tenth session's device call (2026-12-06): on an H200 -- the issue's own card, not measured since the
# kernels landed -- issue 9's table as shipped (b1_b16_table.sh); on an H100 -- five hosts measured with the
# table already -- the lean loops of the persistent launch, never yet run (persistent_third.sh), and the
# step's timeline without it for comparison; on both, what a token costs beyond the model's step
# (loop_timeline.py). Usage: bash bench/probes/tenth_call.sh
here="$(dirname "$0")"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  bash "$here/b1_b16_table.sh"
  source "$here/device_setup.sh" > /dev/null
  timeout 90 python bench/probes/loop_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/loop_timeline.txt"
else
  bash "$here/persistent_third.sh"
  source "$here/device_setup.sh" > /dev/null
  timeout 70 python bench/probes/step_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_timeline_shipped.txt"
  timeout 90 python bench/probes/loop_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/loop_timeline.txt"
fi
