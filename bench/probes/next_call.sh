#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, tenth session; ~8-9 minutes). First the tenth
# session's host-time changes, never timed on a GPU (a 2-token call was 7.40 ms, each of 254 more tokens
# 1,142.6 us on an H100): loop_timeline.py, then call_overhead.py. Then issue 9's table: on an H200 -- the
# issue's own card, not measured since the kernels landed -- as shipped with batch 16/64
# (b1_b16_table.sh); on an H100 the batch-1 cells only (a sixth host for the 2.5x ratio).
# Usage: bash bench/probes/next_call.sh
here="$(dirname "$0")"
source "$here/device_setup.sh"
timeout 90 python bench/probes/loop_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/loop_timeline.txt"
timeout 90 python bench/probes/call_overhead.py 2>&1 | grep -v -i -e warn -e Writing > "$out/call_overhead.txt"
head -3 "$out/call_overhead.txt"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  bash "$here/b1_b16_table.sh"
else
  bash "$here/b1_b16_table.sh" --batch-1-only
fi
