#!/usr/bin/env bash
# The nineteenth session's follow-up call on the same warm machine (~4-6 minutes): the CUDA tests of the decode
# kernels, graph loop and graphed forward with the GEMV settings now shipped, then issue 9's batch-16 and -64
# cells (genplug native against transformers' static + compile).
# Usage: bash bench/probes/nineteenth_followup.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
timeout 150 python -m pytest -q -x -p no:cacheprovider tests/test_loop_kernels.py tests/plugins/models/test_decode_kernels.py \
  tests/test_graph_loop.py > "$out/cuda_tests.txt" 2>&1; tail -2 "$out/cuda_tests.txt"
timeout 300 python bench/gpu_decode.py --batches 16,64 --repeats 2 --cells "static+compile,native (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b16_64.txt"; tail -10 "$out/gpu_decode_b16_64.txt"
