#!/usr/bin/env bash
# One device call (~9 minutes): transformers models of the families whose fused-kernel paths had not
# been timed on a GPU -- Qwen2, Phi-3, Gemma 3 -- through genplug against transformers' static+compile
# (bench/probes/twin_families.py); the CUDA tests of the Gemma paths and of the attention kernel; then
# the attention tile fitted to heads of 128/256 against the tile as tuned (bench/probes/head_sizes.py).
# Each part goes to $OUT as it finishes. Usage: bash bench/probes/families_session.sh
source "$(dirname "$0")/device_setup.sh"
timeout 280 python bench/probes/twin_families.py 2>&1 | grep -v -e Writing -e warn | tee "$out/twin_families.txt"
timeout 190 python -m pytest -q -p no:cacheprovider tests/plugins/models/test_decode_kernels.py \
  -k "gemma or gated or delta or attention" > "$out/cuda_tests.txt" 2>&1; tail -3 "$out/cuda_tests.txt"
timeout 100 python bench/probes/head_sizes.py 2>&1 | grep -v -e Writing -e warn | tee "$out/head_sizes.txt"
