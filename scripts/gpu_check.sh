#!/usr/bin/env bash
# GPU checks, one command: writes JSON and markdown tables under $OUT (default results/gpu).
#
#   bash scripts/gpu_check.sh [--cpu-smoke] [--data-root DIR]
#
# Part 5 (local against Ray executor) needs Ray installed; it is skipped, and says so, without it.
# --cpu-smoke runs every check tiny and on the CPU, so CI keeps this script working on machines
# without a GPU. --data-root is a folder with cifar-10-batches-py/ and cifar-100-python/ (default
# BENCH_DATA_ROOT, else gpu-data/ beside the repository's files if present, else ../shared/data): the
# 35 MiB subset suites/gpu-check.yaml describes how to make. Without CIFAR the data-path check falls back
# to scikit-learn's digits resized to 32x32, and the training run is skipped (said in its output).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
data_root="${BENCH_DATA_ROOT:-$( [[ -d gpu-data ]] && echo gpu-data || echo ../shared/data )}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-smoke) smoke=1; shift ;;
    --data-root) data_root="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
out="${OUT:-results/gpu}"
mkdir -p "$out"

if [[ -d "$data_root/cifar-10-batches-py" ]]; then
  data=(--dataset cifar10 --data-root "$data_root")
else
  data=(--dataset digits --resolution 32)
fi

if [[ $smoke == 1 ]]; then
  device=(--device cpu); sizes=(--per-class 20 --seconds 0.2 --repeats 1 --steps 2 --batch-size 64)
  matrix=(--matrix resnet8@16 --matrix-batch-size 8 --steps 2 --matrix-skip-compile)
  step=(--backbone resnet8 --batch-size 16 --steps 4 --repeats 1 --source-epochs 1 --probe-epochs 3)
else
  device=(--device cuda); sizes=(--batch-size 1024 --seconds 2 --repeats 3 --steps 50)
  matrix=(--matrix resnet18_cifar@32 torchvision:resnet18@224 --matrix-batch-size 256 --steps 30)
  step=(--backbone resnet18_cifar --batch-size 512 --steps 30 --repeats 3)
fi

# 1. Data path: the device-resident array loader against the torchvision DataLoader baseline.
python -m bench datapath "${data[@]}" "${device[@]}" "${sizes[@]}" --backends baseline,device \
  --json "$out/datapath.json" --markdown "$out/datapath.md"

# 2. The bf16 matmul peak, then train images/s, TFLOP/s and MFU: eager fp32, bf16 + channels_last, + compile.
python -m bench throughput --parts matrix "${device[@]}" "${matrix[@]}" \
  --json "$out/runtime_matrix.json" --markdown "$out/runtime_matrix.md"

# 3. The harness's train step against a bare loop, and the cached linear probe against the naive one.
python -m bench throughput --parts step,probe "${device[@]}" "${step[@]}" \
  --json "$out/harness_overhead.json" --markdown "$out/harness_overhead.md"

# 4. A short real training run: CIFAR-10 -> CIFAR-100 subsets through the whole harness.
if [[ $smoke == 1 ]]; then
  python -m bench run suites/ci.yaml --out "$out/training-run" --filter "scratch/seed0"
elif [[ -d "$data_root/cifar-10-batches-py" && -d "$data_root/cifar-100-python" ]]; then
  python -m bench run suites/gpu-check.yaml --data-root "$data_root" --out "$out/training-run"
else
  echo "gpu_check: no CIFAR under $data_root: the training run is skipped" >&2
fi

# 5. The executors: the training run from scratch in one process, then as Ray tasks across every GPU of the
#    machine (a task per artifact, a GPU per training task); wall times and whether the cells agree.
if ! python -c "import ray" 2>/dev/null; then
  echo "gpu_check: Ray is not installed (pip install -e '.[ray]'): the executor comparison is skipped" >&2
elif [[ $smoke == 1 ]]; then
  python scripts/executor_benchmark.py suites/ci.yaml --filter "scratch/seed0" --json "$out/executors.json" --markdown "$out/executors.md"
elif [[ -d "$data_root/cifar-10-batches-py" && -d "$data_root/cifar-100-python" ]]; then
  python scripts/executor_benchmark.py suites/gpu-check.yaml --data-root "$data_root" --json "$out/executors.json" --markdown "$out/executors.md"
fi

echo "gpu_check: wrote $(ls "$out" | tr '\n' ' ')in $out"
