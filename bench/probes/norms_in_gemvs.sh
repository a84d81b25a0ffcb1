#!/usr/bin/env bash
# One device call (~8 minutes on an H100) for the norms inside the GEMVs (fused_step.NORMS_IN_GEMVS):
# the decode-kernel tests on CUDA (real atomics for the GEMV's split merge), the step variants
# (bench/probes/step_variants.py: norms in the GEMVs or as kernels, gate/up through the GEMV or cuBLAS,
# PDL on/off), the batch-1 table against transformers' static+compile, and batch 16/64 genplug rows
# (the gate/up projection's new [out, in] storage under cuBLAS). Writes each part to $OUT.
set -u
out=${OUT:-probe_out}
mkdir -p "$out"
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$out/device.txt"
timeout 90 python -m pytest -q -x -p no:cacheprovider tests/plugins/models/test_decode_kernels.py \
    -k "residual or norm_of or share_the_kernels or unfused_step or twin_reads or gemv" \
    > "$out/cuda_tests.txt" 2>&1; tail -3 "$out/cuda_tests.txt"
timeout 150 python bench/probes/step_variants.py 2>&1 | grep -v Writing | tee "$out/variants.txt" | tail -10
timeout 170 python bench/gpu_decode.py --batches 1 \
  --cells "static+compile,native (static; default,hf model (static; default" 2>&1 | grep -v Writing \
  | tee "$out/gpu_decode_b1.txt" | tail -12
timeout 90 python bench/gpu_decode.py --batches 16,64 --cells "native (static; default" --repeats 2 2>&1 \
  | grep -v Writing | tee "$out/gpu_decode_b16_64.txt" | tail -8
timeout 60 python bench/probes/step_kernels.py 2>&1 | grep -v Writing > "$out/step_kernels.txt"; head -32 "$out/step_kernels.txt"
