#!/usr/bin/env bash
# One device call's worth of checks and measurements for the batch-1 decode work (about 8 minutes on
# an H100): the CUDA kernel tests (the split attention's cross-program merge and programmatic
# dependent launch only run for real on a GPU), the step variants, the attention sweep and the
# breakdown of one call. Writes each part to $OUT (or ./probe_out). Usage: bash bench/probes/gpu_session.sh
source "$(dirname "$0")/device_setup.sh"
GENPLUG_PDL=1 timeout 240 python -m pytest -q -x -p no:cacheprovider tests/plugins/models/test_decode_kernels.py \
    tests/test_vocab_kernels.py tests/plugins/processors/test_truncation_kernels.py > "$out/tests_pdl.txt" 2>&1
tail -2 "$out/tests_pdl.txt"
timeout 200 python bench/probes/step_variants.py > "$out/variants.txt" 2>&1; grep -v "Writing" "$out/variants.txt" | tail -9
timeout 150 python bench/probes/decode_attention.py --fused-only > "$out/attention.txt" 2>&1; tail -4 "$out/attention.txt"
timeout 120 python bench/probes/loop_breakdown.py > "$out/breakdown.txt" 2>&1; grep -E "^(greedy|sampling):" "$out/breakdown.txt"
