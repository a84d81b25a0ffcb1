#!/usr/bin/env bash
# One device call (twelfth session): on an H200 -- the issue's own card, never measured with the current
# kernels -- issue 9's table as shipped, batch 1 then 16/64 (b1_b16_table.sh, ~6 minutes); on either card,
# where a whole generate call's GPU time goes beyond its graph replays (generate_timeline.py), and on an
# H100 also the profile of a 2-token call (call_overhead.py).
# Usage: bash bench/probes/table_or_timeline.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
out="$(cd "$out" && pwd)"
[ $h200 = 1 ] && bash "$here/b1_b16_table.sh"
timeout 120 python bench/probes/generate_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/generate_timeline.txt"
exit 0
