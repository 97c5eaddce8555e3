"""Plan time of a suite over a large WebDataset shard set: fabricates SHARDS tar files of IMAGES images in all (each
shard holds one real JPEG and a label; the index says every sample of the shard is that image, so the set is a
million images on the index's word without a gigabyte of disk), then times ``bench run SUITE --dry-run``, which
reads the index, fingerprints every split and decodes the images behind the normalisation statistics, but trains
nothing. Prints the seconds of each of REPEATS runs.

Usage: python scripts/shard_plan_time.py [--images 1000000] [--shards 1000] [--repeats 3]
"""

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transfer_core.datasets.webdataset import index_arrays, write_index  # noqa: E402


def fabricate(folder: Path, images: int, shards: int, classes: int = 100) -> None:
    per_shard = images // shards
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    paths, entries = [], []
    for split, count in (("train", shards - shards // 10), ("test", shards // 10)):
        for k in range(count):
            path = folder / f"{split}-{k:06d}.tar"
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
                for name, payload in (("000000.jpg", jpeg), ("000000.cls", b"0")):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
            paths.append(path)
            first = len(paths) * per_shard
            entries.append(
                {
                    "key": np.array([f"{i:09d}" for i in range(first, first + per_shard)]),
                    "offset": np.full(per_shard, 512, dtype=np.int64),  # the one JPEG's data, after its header
                    "size": np.full(per_shard, len(jpeg), dtype=np.int64),
                    "label": rng.integers(0, classes, per_shard),
                }
            )
    write_index(folder, index_arrays(folder, paths, entries))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shard-plan-") as scratch:
        folder = Path(scratch) / "shards"
        folder.mkdir()
        started = time.perf_counter()
        fabricate(folder, args.images, args.shards)
        print(f"fabricated {args.images} images in {args.shards} shards in {time.perf_counter() - started:.1f} s")
        suite = {
            "schema_version": 1,
            "name": "plan-time",
            "source": {"dataset": "webdataset", "path": str(folder), "resolution": 32, "epochs": 1},
            "targets": [
                {"dataset": "webdataset", "path": str(folder), "classes": list(range(50)), "resolution": 32},
                {"dataset": "webdataset", "path": str(folder), "examples": 1000, "resolution": 32},
            ],
            "backbones": ["resnet8"],
            "strategies": {"linear_probe": {}, "full_finetune": {}},
            "seeds": [0, 1, 2],
            "runtime": {"device": "cpu"},
        }
        (Path(scratch) / "suite.yaml").write_text(yaml.safe_dump(suite))
        for repeat in range(args.repeats):
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "bench", "run", "suite.yaml", "--dry-run", "--out", "out"],
                cwd=scratch,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                print(result.stderr[-2000:])
                return 1
            print(f"run {repeat + 1}: bench run --dry-run, {args.images} images: {seconds:.2f} s (process included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
