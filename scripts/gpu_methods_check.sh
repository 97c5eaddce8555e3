#!/usr/bin/env bash
# GPU checks of the transfer methods, one command; copies the reports and records under $OUT (default
# results/gpu-methods):
#   1. suites/gpu-methods.yaml: the L-BFGS probe, LP-FT, L2-SP and alpha-mix with bf16, channels_last and
#      torch.compile on CUDA (needs gpu-data/, see suites/gpu-check.yaml);
#   2. a pretrained timm source on CUDA, offline: random resnet10t weights saved to a file stand in for the
#      published ones; the CIFAR-100 subset is resized to the model's 176 px and normalised with its
#      ImageNet mean and std on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-results/gpu-methods}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"

python -m bench run suites/gpu-methods.yaml --out "$out/methods" --cache-dir /tmp/gpu-methods-cache 2>&1 | tail -n 40 | tee "$out/methods.log"

python - <<'PY'
import timm, torch
torch.manual_seed(0)
torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), "/tmp/resnet10t-random.pth")
PY
cat > /tmp/gpu-pretrained.yaml <<'YAML'
schema_version: 1
name: gpu-pretrained
data: {root: gpu-data}
source: {pretrained: "timm:resnet10t.c3_in1k", file: /tmp/resnet10t-random.pth}
targets:
  - {dataset: cifar100, val_fraction: 0.1}
strategies:
  linear_probe: {}
  full_finetune: {epochs: 2, lr: 0.01}
train: {batch_size: 256}
runtime: {device: auto, amp: auto, compile: "off", channels_last: true}
seeds: [0]
YAML
python -m bench run /tmp/gpu-pretrained.yaml --data-root gpu-data --out "$out/pretrained" --cache-dir /tmp/gpu-methods-cache 2>&1 | tail -n 20 | tee "$out/pretrained.log"
rm -rf "$out/methods/cache" "$out/pretrained/cache"
echo "gpu_methods_check: wrote $(ls "$out" | tr '\n' ' ')in $out"
