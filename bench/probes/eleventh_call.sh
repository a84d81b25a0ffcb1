#!/usr/bin/env bash
# The eleventh session's device call (2026-12-06; ~8-9 minutes). First the input norm inside the q/k/v GEMV
# against the shipped step, in one process (step_variants.py; GENPLUG_NORM_IN_QKV). The rest runs with it
# on where it was >0.5% faster than the better shipped run and its graph equalled eager: what a token costs
# beyond the model's step (loop_timeline.py: the logits are now chosen from bf16 and the embedding lookup
# sits in the first norm kernel, both untimed so far), then issue 9's table -- on an H200 (the issue's own
# card, never measured with the current kernels) with batch 16/64, on an H100 the batch-1 cells.
# Ran once on an H100 (bench/results/eleventh_session_h100/); the norm in q/k/v and the 4-step graph were
# removed after it, so its variants no longer exist. Usage: bash bench/probes/eleventh_call.sh
here="$(dirname "$0")"
source "$here/device_setup.sh"
timeout 230 python bench/probes/step_variants.py "as shipped" "norm in q/k/v" "one step per graph replay" "attention 16 splits" \
  "attention 2 heads x 64 slots" "as shipped (again: noise)" 2>&1 \
  | grep -v -i -e warn -e Writing | tee "$out/step_variants.txt"
if python - "$out/step_variants.txt" <<'PY'
import re, sys
rates = {}
for line in open(sys.argv[1]):
    m = re.match(r"(.+?)\s+([\d.]+) tokens/s .*graph == eager (True|False)", line)
    if m and m.group(3) == "True":
        rates.setdefault(m.group(1).strip().replace(" (again: noise)", ""), []).append(float(m.group(2)))
shipped, norm = max(rates.get("as shipped", [0])), max(rates.get("norm in q/k/v", [0]))
sys.exit(0 if shipped and norm > 1.005 * shipped else 1)
PY
then
  export GENPLUG_NORM_IN_QKV=1; echo "norm in q/k/v: ON for the rest" | tee -a "$out/device.txt"
else
  echo "norm in q/k/v: off for the rest" | tee -a "$out/device.txt"
fi
timeout 90 python bench/probes/loop_timeline.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/loop_timeline.txt"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  bash "$here/b1_b16_table.sh"
else
  bash "$here/b1_b16_table.sh" --batch-1-only
fi
