#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, twelfth session; ~6-8 minutes). On an H200 -- the
# issue's own card, never measured with the current kernels -- issue 9's table as shipped with batch 16/64
# (b1_b16_table.sh) first; on an H100 (six hosts this session and last: 2.22-2.42x at batch 1, 71-72% of the
# limit) the batch-1 cells only. Then on either where a whole generate call's time goes
# (generate_timeline.py).
# Usage: bash bench/probes/next_call.sh
here="$(dirname "$0")"
source "$here/device_setup.sh"
if [ $h200 = 1 ]; then
  bash "$here/b1_b16_table.sh"
else
  bash "$here/b1_b16_table.sh" --batch-1-only
fi
source "$here/device_setup.sh" > /dev/null
timeout 120 python bench/probes/generate_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/generate_timeline.txt"
