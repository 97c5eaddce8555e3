"""How long corrupting a test split takes: each of the 15 corruptions on the 10,000 CIFAR-100 test images.

    python scripts/corruption_timing.py --data-root ../shared/data [--device cpu] [--device cuda] \
        [--severity 3] [--images 10000] [--json results/corruptions/cpu.json] [--markdown results/corruptions/cpu.md]

With CIFAR files (any subset in torchvision's layout) it corrupts their test images; without, as many random
32 px images (seconds depend little on content, except JPEG's). Each corruption runs once per device, after
one small warm-up batch (CUDA kernels, the frost textures), synchronised before the clock stops. Pixelate and
JPEG run through PIL on the CPU whatever the device (``ON_CPU_ONLY``): their figures are the CPU's.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transfer_core.shifts.corruptions import CORRUPTIONS, ON_CPU_ONLY, corrupt  # noqa: E402


def test_images(data_root: str | None, n: int) -> tuple[torch.Tensor, str]:
    path = Path(data_root or "") / "cifar-100-python" / "test"
    if data_root and path.is_file():
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images = torch.from_numpy(batch["data"][:n].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy())
        return images, f"CIFAR-100 test images from {path}"
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 32, 32, 3), generator=generator, dtype=torch.uint8), "random 32 px images"


def time_one(images: torch.Tensor, name: str, severity: int, device: str) -> float:
    corrupt(images[:64], name, severity, seed=0, device=device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    corrupt(images, name, severity, seed=0, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root")
    parser.add_argument("--device", action="append", help="cpu, cuda (repeat for several); default cpu")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    devices = args.device or ["cpu"]
    images, what = test_images(args.data_root, args.images)
    seconds = {device: {} for device in devices}
    for name in CORRUPTIONS:
        for device in devices:
            seconds[device][name] = time_one(images, name, args.severity, device)
            print(f"{name:18s} {device:5s} {seconds[device][name]:7.2f} s", file=sys.stderr, flush=True)
    machine = torch.cuda.get_device_name(0) if any(d.startswith("cuda") for d in devices) else "CPU"
    found = {
        "images": len(images),
        "what": what,
        "severity": args.severity,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": machine,
        "seconds": seconds,
        "on_cpu_only": list(ON_CPU_ONLY),
    }
    header = "| corruption | " + " | ".join(f"{d} (s)" for d in devices) + " |"
    lines = [
        f"Corrupting {len(images):,} {what} at severity {args.severity} (torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; {machine}); pixelate and JPEG run through PIL on the CPU.",
        "",
        header,
        "|" + " --- |" * (len(devices) + 1),
    ]
    for name in CORRUPTIONS:
        lines.append(f"| {name} | " + " | ".join(f"{seconds[d][name]:.2f}" for d in devices) + " |")
    lines.append("| **all 15** | " + " | ".join(f"**{sum(seconds[d].values()):.1f}**" for d in devices) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(found, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
