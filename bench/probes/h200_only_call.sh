#!/usr/bin/env bash
# A short device call for the issue's own card (~5-6 minutes): on an H200 the GEMV tiles timed there (the step
# under the old, shipped and best-there tiles) and issue 9's batch-1 greedy cells against transformers' static +
# compile; on any other card it stops at once (the H100 figures of this session are in bench/results).
# Usage: bash bench/probes/h200_only_call.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
[ "$h200" = 1 ] || { echo "not an H200: nothing run"; exit 0; }
timeout 170 python bench/probes/gemv_retune.py 2>&1 | grep -v -i -e warn -e Writing | tee "$out/gemv_retune.txt"
timeout 150 python bench/gpu_decode.py --batches 1 --repeats 2 --cells "static+compile,native (static; default" \
  2>&1 | grep -v -e Writing -e warn > "$out/gpu_decode_b1.txt"; tail -14 "$out/gpu_decode_b1.txt"
