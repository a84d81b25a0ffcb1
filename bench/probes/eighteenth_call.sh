#!/usr/bin/env bash
# The eighteenth session's first device call (~4-9 minutes): what a kernel boundary costs (PDL's wait against a
# counter spun on; bench/probes/boundary_cost.py), then on an H200 the GEMV tiles timed there and issue 9's
# batch-1 table (bench/probes/next_call.sh), on an H100 the step's timeline under the shipped tiles.
# Usage: bash bench/probes/eighteenth_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
timeout 120 python bench/probes/boundary_cost.py 2>&1 | grep -v -i warn | tee "$out/boundary_cost.txt"
if [ "$h200" = 1 ]; then
  bash "$here/next_call.sh"
else
  timeout 120 python bench/probes/step_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_timeline.txt"
fi
