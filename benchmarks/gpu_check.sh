#!/usr/bin/env bash
# The GPU check: run once on a lent GPU machine (PyTorch with CUDA; TensorRT and internet not needed).
#
#     benchmarks/gpu_check.sh OUTDIR
#
# What it does today (the project has no CUDA kernels and no GPU-marked tests yet):
#   1. records the machine (GPU, driver, CUDA, PyTorch) in OUTDIR/environment.txt;
#   2. trains the demo weights, cstf-n on SynthRS, for TRAIN_EPOCHS epochs (default 9, about 3 minutes on an H200)
#      (benchmarks/train_demo.py), and validates them on a SynthRS set made with an unseen seed;
#   3. copies report.json, weights.safetensors (+ .json) and metrics.csv to OUTDIR, and the log.
# It finishes in about 8 minutes on an H100/H200 with 16 cores.
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
work=${GPU_CHECK_WORK:-/tmp/cstf_gpu_check}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  python3 -c "import torch, platform; print('python', platform.python_version()); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  echo "cpus $(nproc)"
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

# TRAIN_EXTRA_ARGS: more train_demo.py options (a dry run elsewhere: "--device cpu --train-n 32 ...").
status=0
# shellcheck disable=SC2086
python3 benchmarks/train_demo.py --out "$work/run" --work "$work/data" --device cuda \
  --epochs "${TRAIN_EPOCHS:-9}" --workers "${TRAIN_WORKERS:-14}" ${TRAIN_EXTRA_ARGS:-} \
  2>&1 | tee "$out/train.log" || status=$?

# Bring back whatever was made, even when a later step failed.
for file in "$work/run/report.json" "$work/run/run/weights.safetensors" "$work/run/run/weights.json" \
            "$work/run/run/metrics.csv"; do
  [ -f "$file" ] && cp "$file" "$out/"
done
exit "$status"
