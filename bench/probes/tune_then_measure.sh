#!/usr/bin/env bash
# One device call for the batch-1 target when device time is short: measure the step variants
# (bench/probes/step_variants.py), then the batch-1 table (bench/gpu_decode.py --batches 1) with the
# fastest variant whose graph loop equals its eager path, then the CUDA kernel tests under PDL.
# Writes each part to $OUT (or ./probe_out). Usage: bash bench/probes/tune_then_measure.sh [batches]
source "$(dirname "$0")/device_setup.sh"
timeout 200 python bench/probes/step_variants.py 2>&1 | grep -v Writing | tee "$out/variants.txt"
flags=$(grep "^best flags:" "$out/variants.txt" | sed 's/^best flags://')
echo "gpu_decode flags: $flags"
timeout 330 python bench/gpu_decode.py --batches "${1:-1}" $flags 2>&1 | tee "$out/gpu_decode.txt"
GENPLUG_PDL=1 timeout 120 python -m pytest -q -x -p no:cacheprovider tests/plugins/models/test_decode_kernels.py \
    tests/test_vocab_kernels.py tests/plugins/processors/test_truncation_kernels.py > "$out/tests_pdl.txt" 2>&1
tail -2 "$out/tests_pdl.txt"
