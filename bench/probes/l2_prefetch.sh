#!/usr/bin/env bash
# One device call (~9 minutes) for the L2 prefetch of weights (decode_kernels.GEMV_L2_PREFETCH_BYTES,
# NORM_L2_PREFETCH_BYTES): the CUDA tests of the decode kernels under PDL first (the prefetch is inline
# PTX the interpreter never runs), then the step variants with and without it, then the batch-1 table
# against transformers with every cell the issue names, under the fastest variant that gpu_decode.py can set. Each part goes to $OUT as it finishes.
source "$(dirname "$0")/device_setup.sh"
timeout 90 python -m pytest -q -x -p no:cacheprovider tests/plugins/models/test_decode_kernels.py tests/test_loop_kernels.py \
  > "$out/cuda_tests.txt" 2>&1; tail -2 "$out/cuda_tests.txt"
timeout 240 python bench/probes/step_variants.py "as shipped" "GEMVs prefetch their slices to L2 (32 MB)" \
  "GEMVs prefetch to L2 (8 MB)" "norm prefetches gate/up to L2 (16 MB)" "GEMVs (32 MB) + norm (16 MB) prefetch to L2" \
  "gate/up GEMV + GEMVs prefetch to L2 (32 MB)" "as shipped (again: noise)" 2>&1 | grep -v Writing > "$out/variants.txt"
cat "$out/variants.txt"
flags=$(grep "^best flags:" "$out/variants.txt" | sed 's/^best flags://')
echo "gpu_decode flags: $flags" | tee "$out/flags.txt"
timeout 240 python bench/gpu_decode.py --batches 1 $flags \
  --cells "transformers dynamic,static+compile,native (static; default,hf model (static; default" \
  2>&1 | grep -v Writing > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
