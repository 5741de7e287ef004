#!/usr/bin/env bash
# The GPU check (issue 6): run once on a lent GPU machine, commit OUTDIR under benchmarks/results/ with the
# machine named.
#
#     benchmarks/gpu_check.sh OUTDIR
#
# Made for a fresh H100/H200 machine with PyTorch (CUDA), cuda-python + NVRTC, maybe no TensorRT, no internet,
# 16 cores; finishes in under 8 minutes (GPU_CHECK_BUDGET seconds of steps, default 420). Steps, in priority
# order; each is bounded by `timeout` (its cap, and what is left of the budget), goes on after a failure, and
# records its exit status and seconds in OUTDIR/steps.txt (124: timed out; "skipped": no time or not here):
#   setup      shapely/numba/matplotlib from ./.whl when they do not import (no index is used)
#   env        OUTDIR/environment.txt: nvidia-smi, Python, torch/CUDA, cuda-python/NVRTC, TensorRT, ONNX Runtime
#   data       the SynthRS val (calibration/synthrs-val.toml, 60 x 1024) and calibration sets, into the cache
#   tests      pytest -m "gpu or trt" on the test files carrying those markers -> OUTDIR/gpu_tests.log
#   kernels    benchmarks/gpu_kernels_check.py (CUDA twins' parity, CPU vs GPU timings) -> OUTDIR/kernels.json
#   bench-gpu  PyTorch FP32/FP16 on the GPU at 1024, batches 1,8,32 -> OUTDIR/bench-gpu/report.*
#   bench-trt  TensorRT FP16 engines (only where `import tensorrt` works) -> OUTDIR/bench-trt/report.*
#   run        cstf-edge run --device cuda:0 with --pipeline cpu and --pipeline cuda on a few val scenes: the
#              shipped PyTorch weights (their 512 training size, so 1024 scenes are tiled) and the 1024 TensorRT
#              engine when bench-trt built one -> OUTDIR/run-<model>-<pipeline>/summary.json, logs/run.log
#   bench-cpu  ONNX Runtime FP32/INT8 on this CPU (and PyTorch FP32 there) for comparison -> OUTDIR/bench-cpu
#   train      optional, GPU_CHECK_TRAIN=1: the demo training of benchmarks/train_demo.py (off by default)
# Logs of every step: OUTDIR/logs/<step>.log. Exit status: 0 when every step that ran passed, 1 otherwise.
#
# Settings (environment): GPU_CHECK_DEVICE (cuda:0; "cpu" dry-runs the script on a machine without a GPU),
# GPU_CHECK_WORK (work folder, /tmp/cstf_gpu_check; the SynthRS cache goes in it as CSTF_EDGE_CACHE),
# GPU_CHECK_BUDGET (420), GPU_CHECK_BATCHES (1,8,32), GPU_CHECK_IMAGES (16, --max-images of the benches),
# GPU_CHECK_ITERS (20), GPU_CHECK_WARMUP (3), GPU_CHECK_TRT_PRECISIONS (fp16), GPU_CHECK_RUN_IMAGES (8),
# GPU_CHECK_TRAIN (0), PYTHON (python3).
# shellcheck disable=SC2329  # the step_* functions run through `bash -c` (export -f)
set -uo pipefail

out=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$out/logs" || exit 2
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.." || exit 2
export REPO=$PWD OUT=$out
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export PY=${PYTHON:-python3}
export WORK=${GPU_CHECK_WORK:-/tmp/cstf_gpu_check}
export CSTF_EDGE_CACHE=${CSTF_EDGE_CACHE:-$WORK/cache}
export DEVICE=${GPU_CHECK_DEVICE:-cuda:0}
export BATCHES=${GPU_CHECK_BATCHES:-1,8,32} IMAGES=${GPU_CHECK_IMAGES:-16} ITERS=${GPU_CHECK_ITERS:-20}
export WARMUP=${GPU_CHECK_WARMUP:-3} TRT_PRECISIONS=${GPU_CHECK_TRT_PRECISIONS:-fp16}
export RUN_IMAGES=${GPU_CHECK_RUN_IMAGES:-8}
budget=${GPU_CHECK_BUDGET:-420}
mkdir -p "$WORK" "$CSTF_EDGE_CACHE"
printf 'step\tstatus\tseconds\n' > "$out/steps.txt"
failed=0

log() { echo "[gpu_check $(date +%T)] $*"; }

# run_step NAME CAP FUNCTION: FUNCTION under `timeout` (CAP seconds, or what is left of the budget),
# output to OUTDIR/logs/NAME.log, status and seconds to OUTDIR/steps.txt.
run_step() {
  local name=$1 cap=$2 fn=$3 left limit start status
  left=$((budget - SECONDS))
  limit=$((cap < left ? cap : left))
  if ((limit < 15)); then
    printf '%s\tskipped (budget spent)\t0\n' "$name" >> "$out/steps.txt"
    log "$name: skipped, budget spent"
    return
  fi
  log "$name: up to ${limit}s"
  start=$SECONDS
  timeout --kill-after=15 "$limit" bash -o pipefail -c "$fn" > "$out/logs/$name.log" 2>&1
  status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >> "$out/steps.txt"
  log "$name: exit $status after $((SECONDS - start))s"
  ((status == 0)) || failed=1
}

skip_step() {
  printf '%s\tskipped (%s)\t0\n' "$1" "$2" >> "$out/steps.txt"
  log "$1: skipped ($2)"
}

step_setup() {
  for pkg in shapely numba matplotlib; do
    if "$PY" -c "import $pkg" 2>/dev/null; then
      echo "$pkg: imports"
    elif compgen -G ".whl/${pkg}-*.whl" > /dev/null; then
      "$PY" -m pip install --no-index --find-links .whl "$pkg" || echo "$pkg: install from .whl failed"
    else
      echo "$pkg: missing and no wheel in .whl/ (numba and matplotlib are optional; shapely is not)"
    fi
  done
  "$PY" -c "import shapely, cstf_edge.runtime; print('cstf_edge.runtime imports')"
}

step_env() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(hostname) cpus: $(nproc) mem: $(free -g 2>/dev/null | awk '/Mem:/{print $2 " GiB"}')"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm --format=csv \
      || echo "nvidia-smi: not found"
    nvidia-smi 2>/dev/null | head -15
    "$PY" - <<'EOF'
import importlib
import importlib.metadata as md
import platform

print("python", platform.python_version())
for dist in ("torch", "cuda-python", "cuda-bindings", "tensorrt", "onnxruntime", "onnxruntime-gpu", "onnx",
             "cupy-cuda12x", "numpy", "opencv-python-headless", "opencv-python", "shapely", "numba", "matplotlib",
             "pytest", "nvidia-modelopt"):
    try:
        print(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        pass
try:
    import torch
    print("torch cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
          "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
    if torch.cuda.is_available():
        print("torch gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
except Exception as exc:  # noqa: BLE001
    print("torch: not usable:", exc)
try:
    from cstf_edge.runtime.cuda import _driver
    b = _driver.bindings()
    print("cuda-python driver version", _driver.check(b.driver.cuDriverGetVersion(), "cuDriverGetVersion"))
    print("cuda-python runtime version", _driver.check(b.runtime.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    print("nvrtc version", _driver.check(b.nvrtc.nvrtcVersion(), "nvrtcVersion"))
    print("nvrtc archs", _driver.supported_archs())
except Exception as exc:  # noqa: BLE001
    print("cuda-python: not usable:", exc)
try:
    import tensorrt
    print("tensorrt", tensorrt.__version__)
except Exception as exc:  # noqa: BLE001
    print("tensorrt: not importable:", exc)
try:
    import onnxruntime
    print("onnxruntime", onnxruntime.__version__, "providers", onnxruntime.get_available_providers())
except Exception as exc:  # noqa: BLE001
    print("onnxruntime: not importable:", exc)
EOF
  } > "$OUT/environment.txt" 2>&1
  cat "$OUT/environment.txt"
}

step_data() {
  "$PY" - <<'EOF'
import time

from cstf_edge.export.calibration import CalibrationManifest

for manifest in ("calibration/synthrs-val.toml", "calibration/synthrs-calib.toml"):
    start = time.perf_counter()
    paths = CalibrationManifest.load(manifest).image_paths(progress=False)
    print(f"{manifest}: {len(paths)} images in {paths[0].parent} ({time.perf_counter() - start:.1f} s)")
EOF
}

step_tests() {
  local files
  mapfile -t files < <(grep -l -E "mark\.(gpu|trt)" tests/test_*.py)
  echo "pytest -m 'gpu or trt' ${files[*]}"
  "$PY" -m pytest -p no:cacheprovider -m "gpu or trt" -q -rs "${files[@]}" 2>&1 | tee "$OUT/gpu_tests.log"
}

step_kernels() {
  "$PY" benchmarks/gpu_kernels_check.py --out "$OUT/kernels.json" --repeats 20
}

# bench OUTNAME ARGS...: benchmarks/run.py on the SynthRS val set at 1024 (reports written into OUTDIR/OUTNAME)
bench() {
  local name=$1
  shift
  "$PY" benchmarks/run.py --data calibration/synthrs-val.toml --imgsz 1024 --max-images "$IMAGES" \
    --warmup "$WARMUP" --iters "$ITERS" --artifacts "$WORK/artifacts" --out "$OUT/$name" --no-progress \
    --no-sensitivity "$@"
}

step_bench_gpu() {
  bench bench-gpu --device "$DEVICE" --backends torch --precisions fp32,fp16 --batch "$BATCHES"
}

step_bench_trt() {
  bench bench-trt --device "$DEVICE" --backends tensorrt --precisions "$TRT_PRECISIONS" --batch "$BATCHES"
}

step_bench_cpu() {
  bench bench-cpu --device cpu --backends torch,onnxruntime --precisions fp32,int8 --batch 1
}

# run_model NAME MODEL ARGS...: cstf-edge run over the run images, --pipeline cpu then cuda
run_model() {
  local name=$1 model=$2 pipeline status=0
  shift 2
  for pipeline in cpu cuda; do
    echo "== $name, --pipeline $pipeline"
    "$PY" -m cstf_edge run "$WORK/run_images" --model "$model" --device "$DEVICE" --pipeline "$pipeline" \
      --out "$OUT/run-$name-$pipeline" --format json --json --no-progress "$@" || status=1
  done
  return "$status"
}

step_run() {
  local weights engine status=0
  rm -rf "$WORK/run_images" && mkdir -p "$WORK/run_images"
  find "$CSTF_EDGE_CACHE/synthrs/seed2_size1024/images" -name '*.png' | sort | head -n "$RUN_IMAGES" \
    | xargs -r -I{} ln -s {} "$WORK/run_images/"
  weights=$("$PY" -c "from cstf_edge.model.checkpoint import shipped_weights; print(shipped_weights())")
  run_model torch "$weights" --batch 4 || status=1
  engine=$(find "$WORK/artifacts" -name '*.engine' 2>/dev/null | sort | head -n 1)
  if [ -n "$engine" ]; then
    run_model trt "$engine" --batch 8 || status=1
  else
    echo "no TensorRT engine from bench-trt: the engine run is left out"
  fi
  return "$status"
}

step_train() {
  # shellcheck disable=SC2086  # TRAIN_EXTRA_ARGS: more train_demo.py options, split on spaces
  "$PY" benchmarks/train_demo.py --out "$WORK/train" --work "$WORK/train-data" --device "$DEVICE" \
    --epochs "${TRAIN_EPOCHS:-9}" --workers "${TRAIN_WORKERS:-14}" ${TRAIN_EXTRA_ARGS:-}
  for file in "$WORK/train/report.json" "$WORK/train/run/weights.safetensors" "$WORK/train/run/weights.json" \
              "$WORK/train/run/metrics.csv"; do
    [ -f "$file" ] && cp "$file" "$OUT/"
  done
  return 0
}

export -f log bench run_model step_setup step_env step_data step_tests step_kernels step_bench_gpu step_bench_trt \
  step_bench_cpu step_run step_train

log "device $DEVICE, work $WORK, budget ${budget}s, out $out"
run_step setup 60 step_setup
run_step env 45 step_env
run_step data 60 step_data
run_step tests 120 step_tests
run_step kernels 60 step_kernels
run_step bench-gpu 120 step_bench_gpu
if "$PY" -c "import tensorrt" 2>/dev/null; then
  run_step bench-trt 150 step_bench_trt
else
  skip_step bench-trt "tensorrt does not import"
fi
run_step run 60 step_run
run_step bench-cpu 120 step_bench_cpu
if [ "${GPU_CHECK_TRAIN:-0}" = 1 ]; then
  budget=$((budget + ${TRAIN_BUDGET:-240}))
  run_step train "${TRAIN_BUDGET:-240}" step_train
else
  skip_step train "GPU_CHECK_TRAIN is not 1"
fi

log "done in ${SECONDS}s; steps:"
column -t -s $'\t' "$out/steps.txt" 2>/dev/null || cat "$out/steps.txt"
exit "$failed"
