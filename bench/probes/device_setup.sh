# Sourced by the one-call device scripts of bench/probes: the output folder ($OUT, else probe_out) in
# $out, the repository root as the working directory, unbuffered Python, whether the card is an H200
# ($h200), and the card and library versions written to $out/device.txt (and printed).
set -u
out=${OUT:-probe_out}
mkdir -p "$out"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$out/device.txt"
# h200=1 on the issue's own card (an H200), else 0
h200=0; nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && h200=1
