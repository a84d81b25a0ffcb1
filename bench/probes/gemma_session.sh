#!/usr/bin/env bash
# One device call (~9 minutes) for the Gemma paths of the fused decode kernels: bench/probes/gemma_kernels.py (a Gemma-3-1B shape, fused kernels against the PyTorch
# graph step and transformers' static+compile), then bench/probes/head_sizes.py (the attention tile
# fitted to heads of 128 and 256 against the tile as tuned), then their CUDA tests (Gemma 1/2/3 native
# and transformers twins, the gated activations, the normed delta, the soft-capped/windowed attention).
# Each part goes to $OUT as it finishes. Usage: bash bench/probes/gemma_session.sh
source "$(dirname "$0")/device_setup.sh"
timeout 200 python bench/probes/gemma_kernels.py --transformers 2>&1 | grep -v -e Writing -e warn | tee "$out/gemma_kernels.txt"
timeout 120 python bench/probes/head_sizes.py 2>&1 | grep -v -e Writing -e warn | tee "$out/head_sizes.txt"
timeout 230 python -m pytest -q -p no:cacheprovider tests/plugins/models/test_decode_kernels.py \
  -k "gemma or gated or delta or attention" > "$out/cuda_tests.txt" 2>&1; tail -3 "$out/cuda_tests.txt"
