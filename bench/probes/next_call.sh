#!/usr/bin/env bash
# The next session's first device call (written 2026-12-06, twentieth session; ~6-7 minutes).
# On an H200 -- the card where batch-1 greedy stays at 66.8% of the limit (nineteenth session: 1,151.0 tokens/s,
# the small GEMVs alone at 63-76% of the copy bandwidth) -- it times the GEMV prefetch options, still untimed
# there: 2 weight tiles in flight a program (decode_kernels.GEMV_AHEAD = 2, both loaded before the PDL wait), the
# input an iteration ahead (GEMV_X_AHEAD), and with q/k/v in 4 warps (step_variants.py, tokens checked against the
# shipped step's). On the twentieth session's H100 they lost (901.5 / 924.0 / 904.4 against 933.9 / 935.9 tokens/s
# as shipped, bench/results/twentieth_session/), so on an H100 this skips them. Then where the step's time goes
# under the fastest, and issue 9's table at batch 1, 16 and 64 (transformers' static + compile, genplug native) under
# it, with cold compile caches for both libraries.
# Usage: bash bench/probes/next_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
best="as shipped"
if [ "$h200" = 1 ]; then
  timeout 200 python bench/probes/step_variants.py "as shipped" "GEMV 2 tiles ahead" "GEMV input ahead" \
    "GEMV 2 tiles + input ahead" "2 ahead + q/k/v (32, 128, 4, 2, 8)" "as shipped (again: noise)" 2>&1 \
    | grep -v -i -e warn -e Writing | tee "$out/step_variants_ahead.txt"
  best=$(sed -n 's/^fastest with graph == eager: //p' "$out/step_variants_ahead.txt")
  best=${best:-as shipped}
fi
timeout 45 python bench/probes/step_timeline.py --variant "$best" 2>&1 | grep -v -i -e warn -e Writing | head -30 \
  | tee "$out/step_timeline.txt"
export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
timeout 240 python bench/gpu_decode.py --batches 1,16,64 --cells "static+compile,native (static; default" \
  --variant "$best" 2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_targets.txt"; tail -24 "$out/gpu_decode_targets.txt"
