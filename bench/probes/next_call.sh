#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, seventeenth session; ~6-8 minutes). No H200 came
# in the seventeenth session, so the re-tuned GEMV tiles (sixteenth session, H100s) have never run on the
# issue's own card. On an H200: the GEMV tiles timed there (the step under the old, shipped and best-there
# tiles), then issue 9's batch-1 table. On an H100: the step's timeline under the shipped tiles (where the
# time goes since the re-tuning), then the batch-1 table.
# Usage: bash bench/probes/next_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
if [ "$h200" = 1 ]; then
  timeout 170 python bench/probes/gemv_retune.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/gemv_retune.txt"
else
  timeout 120 python bench/probes/step_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_timeline.txt"
fi
bash "$here/b1_b16_table.sh" --batch-1-only  # the tiles change one-row steps only
