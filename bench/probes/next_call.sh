#!/usr/bin/env bash
# The next session's first device call on an H200 (written 2026-12-06, nineteenth session; ~4-6 minutes). The
# twentieth session ran it on an H100, where the prefetch variants lose (2 tiles ahead 901.5, input ahead 924.0
# against 933.9 / 935.9 tokens/s as shipped: bench/results/twentieth_session/); on an H200 they are untimed. The
# nineteenth session's one started call (an H200) put batch-1 greedy at 1,151.0 tokens/s, 66.8% of the limit, with
# the small GEMVs alone at 63-76% of the copy bandwidth; its next eleven tries got no machine. Untimed since:
# each GEMV program keeping 2 weight tiles in flight (decode_kernels.GEMV_AHEAD = 2, both loaded before the PDL
# wait) and its input an iteration ahead (GEMV_X_AHEAD), the output head's best tile on the H200, the add+norm's
# 4 warps (+0.5% there), the output and down GEMVs in 4 splits, q/k/v in 4 warps. Here: those variants
# (step_variants.py, tokens checked against the shipped step's), where the step's time goes under the fastest,
# then issue 9's batch-1 cells (transformers' static + compile, genplug native) under it.
# Usage: bash bench/probes/next_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
timeout 260 python bench/probes/step_variants.py "as shipped" "GEMV 2 tiles ahead" "GEMV input ahead" \
  "GEMV 2 tiles + input ahead" "add+norm 4 warps + head (16, 256, 4, 2, 16)" "add+norm 4 warps + head + 2 tiles ahead" \
  "output + down 8 columns a tile (4 splits)" "2 ahead + q/k/v (32, 128, 4, 2, 8)" "2 ahead + q/k/v (16, 128, 8, 2, 8)" \
  "as shipped (again: noise)" 2>&1 | grep -v -i -e warn -e Writing | tee "$out/step_variants_ahead.txt"
best=$(sed -n 's/^fastest with graph == eager: //p' "$out/step_variants_ahead.txt")
best=${best:-as shipped}
for variant in "as shipped" "$best"; do
  timeout 45 python bench/probes/step_timeline.py --variant "$variant" 2>&1 | grep -v -i -e warn -e Writing | head -30
done | tee "$out/step_timeline.txt"
timeout 140 python bench/gpu_decode.py --batches 1 --repeats 2 --cells "static+compile,native (static; default" \
  --variant "$best" 2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
