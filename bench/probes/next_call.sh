#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, thirteenth session; ~7-9 minutes): issue 9's whole
# table as shipped (b1_b16_table.sh) -- on an H200, the issue's own card, never measured with the current kernels;
# on an H100, one more host for the batch-1 ratio, which moves with the host's CPU (thirteenth session: 2.28x,
# 2.52x and 2.80x on three hosts, genplug 889-904 tokens/s on all three).
# Usage: bash bench/probes/next_call.sh
here="$(dirname "$0")"
source "$here/device_setup.sh"
bash "$here/b1_b16_table.sh"
