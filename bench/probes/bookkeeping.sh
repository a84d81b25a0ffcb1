#!/usr/bin/env bash
# One device call (~6 minutes on an H100) for the graph loop's bookkeeping kernels (core/loop_kernels.py):
# the batch-1 table against transformers' static+compile first (the closing figures), then the step
# variants with and without the fused bookkeeping, then the CUDA tests of the new kernels and of the
# decode kernels. Each part goes to $OUT as it finishes (a cut-short call still returns the first).
source "$(dirname "$0")/device_setup.sh"
timeout 200 python bench/gpu_decode.py --batches 1 \
  --cells "static+compile,native (static; default,hf model (static; default" 2>&1 | grep -v Writing \
  > "$out/gpu_decode_b1.txt"; tail -9 "$out/gpu_decode_b1.txt"
timeout 100 python bench/probes/step_variants.py "as shipped" "bookkeeping as PyTorch ops" "as shipped (again: noise)" \
  2>&1 | grep -v Writing > "$out/variants.txt"; cat "$out/variants.txt"
timeout 90 python -m pytest -q -x -p no:cacheprovider tests/test_loop_kernels.py tests/test_vocab_kernels.py \
  tests/plugins/models/test_decode_kernels.py -k "loop or bookkeeping or rows or argmax or gumbel or share_the_kernels or unfused_ops" \
  > "$out/cuda_tests.txt" 2>&1; tail -3 "$out/cuda_tests.txt"
