#!/usr/bin/env bash
# One device call (~3-5 minutes) on where the batch-1 step of the 1B shape spends its time and what the
# knobs left do: bench/probes/step_timeline.py (one graph replay profiled: each kind of kernel's share of
# the critical path), then bench/probes/step_variants.py with the variants named as arguments (all
# without). Each part goes to $OUT as it finishes. (The first run of 2026-12-05's seventh session also
# ran bench/probes/head_sizes.py --one-row.)
# Usage: bash bench/probes/step_session.sh ["variant name" ...]
source "$(dirname "$0")/device_setup.sh"
timeout 90 python bench/probes/step_timeline.py 2>&1 | grep -v -e Writing -e warn | tee "$out/step_timeline.txt"
timeout 300 python bench/probes/step_variants.py "$@" 2>&1 | grep -v -e Writing -e warn | tee "$out/step_variants.txt"
