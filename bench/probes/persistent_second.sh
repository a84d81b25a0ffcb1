#!/usr/bin/env bash
# Second device call for the persistent launch (~9 minutes; 2026-12-05, ninth session), after the first
# (bench/probes/persistent_first.sh) measured it at 80 us a layer against 46 for the step's kernels: with one
# poller per program and the sum of squares read 32 values a round trip -- the chain, a sweep of depths, tiles
# and warps and one timeline (bench/probes/persistent_mlp.py --sweep), the whole step with its variants
# (bench/probes/step_variants.py), and where one of them beats the step as shipped with graph == eager,
# issue 9's batch-1 table with it (bench/gpu_decode.py). Usage: bash bench/probes/persistent_second.sh
source "$(dirname "$0")/device_setup.sh"
timeout 170 python bench/probes/persistent_mlp.py --sweep 2>&1 | grep -v -i warn | tee "$out/persistent_mlp.txt"
timeout 190 python bench/probes/step_variants.py "as shipped" "persistent MLP" "persistent MLP, down 8 deep" \
  "persistent MLP, down 8 deep, 8 warps" "persistent MLP, 5 deep, down 12, 8 warps" \
  2>&1 | grep -v -i warn | tee "$out/step_variants.txt"
best=$(grep "fastest with graph == eager:" "$out/step_variants.txt" | sed 's/.*eager: //')
case "$best" in
  "persistent MLP") pipeline=4,0,0 ;;
  "persistent MLP, down 8 deep") pipeline=4,8,0 ;;
  "persistent MLP, down 8 deep, 8 warps") pipeline=4,8,8 ;;
  "persistent MLP, 5 deep, down 12, 8 warps") pipeline=5,12,8 ;;
  *) echo "fastest: ${best:-none}; no batch-1 table"; exit 0 ;;
esac
echo "batch-1 table with the persistent MLP ($pipeline)"
timeout 230 python bench/gpu_decode.py --batches 1 --repeats 2 --persistent-mlp 1 --persistent-pipeline $pipeline \
  --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
