#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, eleventh session; ~6-8 minutes). On an H200 --
# the issue's own card, never measured with the current kernels -- issue 9's table as shipped with batch
# 16/64 (b1_b16_table.sh) first; on an H100 (three hosts measured this session: 2.28-2.42x, 71-72%) the
# batch-1 cells only. Then on either what a token costs beyond the model's step (loop_timeline.py) and a
# profile of a 2-token call (call_overhead.py: 5.2-6.0 ms this session, ~2.3 ms of it host time).
# Usage: bash bench/probes/next_call.sh
here="$(dirname "$0")"
source "$here/device_setup.sh"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  bash "$here/b1_b16_table.sh"
else
  bash "$here/b1_b16_table.sh" --batch-1-only
fi
source "$here/device_setup.sh" > /dev/null
timeout 90 python bench/probes/loop_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/loop_timeline.txt"
timeout 90 python bench/probes/call_overhead.py 2>&1 | grep -v -i -e warn -e Writing > "$out/call_overhead.txt"
head -3 "$out/call_overhead.txt"
