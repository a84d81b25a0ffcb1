#!/usr/bin/env bash
# The eleventh session's second device call (~6-8 minutes): this session's loop and step against the tenth
# session's last commit on one host -- the caller unpacks that commit into ab_old/ first
# (git archive 59c7552 | tar -x -C ab_old) -- and, on an H200 (the issue's own card, never measured with
# the current kernels), issue 9's table first, with batch 16/64.
# Usage: bash bench/probes/ab_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
out="$(cd "$out" && pwd)"
h200=0; nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && h200=1
[ $h200 = 1 ] && bash "$here/b1_b16_table.sh"
new_variants() {
  timeout 120 python bench/probes/step_variants.py "as shipped" "attention 8 splits (tuned before)" \
    "as shipped (again: noise)" 2>&1 | grep -v -i -e warn -e Writing | tee -a "$out/step_variants_new.txt"
}
new_variants
timeout 90 python bench/probes/loop_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/loop_timeline_new.txt"
if [ -d ab_old ]; then
  python -m pip install -q --no-deps --no-build-isolation ./ab_old >/dev/null 2>&1
  (cd ab_old && timeout 100 python bench/probes/step_variants.py "as shipped" "as shipped (again: noise)" 2>&1 \
     | grep -v -i -e warn -e Writing | tee "$out/step_variants_old.txt"
   timeout 90 python bench/probes/loop_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/loop_timeline_old.txt")
  python -m pip install -q --no-deps --no-build-isolation . >/dev/null 2>&1
fi
[ $h200 = 0 ] && bash "$here/b1_b16_table.sh" --batch-1-only
