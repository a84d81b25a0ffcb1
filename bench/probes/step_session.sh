#!/usr/bin/env bash
# One device call (~5 minutes) on where the batch-1 step of the 1B shape spends its time and what the
# knobs left do: bench/probes/step_timeline.py (one graph replay profiled: each kind of kernel's share of
# the critical path), bench/probes/step_variants.py (the shipped step against PDL off, the GEMVs' split
# counts, gate/up through genplug's GEMV...), then bench/probes/head_sizes.py --one-row (the attention
# tile for heads of 256 at batch 1). Each part goes to $OUT as it finishes.
# Usage: bash bench/probes/step_session.sh
source "$(dirname "$0")/device_setup.sh"
timeout 90 python bench/probes/step_timeline.py 2>&1 | grep -v -e Writing -e warn | tee "$out/step_timeline.txt"
timeout 200 python bench/probes/step_variants.py 2>&1 | grep -v -e Writing -e warn | tee "$out/step_variants.txt"
timeout 120 python bench/probes/head_sizes.py --one-row 2>&1 | grep -v -e Writing -e warn | tee "$out/head_sizes.txt"
