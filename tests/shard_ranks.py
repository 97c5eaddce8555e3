"""Run by torchrun in a test: each rank reads its part of a WebDataset's splits through the data path and writes
what it saw (each image's pixel sum and label) to ``<out>/rank<k>.json``. No process group: the rank and world
size come from torchrun's environment, as the runner takes them.

Usage: torchrun --nproc-per-node 2 shard_ranks.py SHARDS OUT BACKEND CLASSES
(CLASSES: "all", or comma-separated class ids: a selection, read by offset instead of as whole shards)."""

import json
import os
import sys
from pathlib import Path

import torch

from transfer_core.data import Augmentation, BatchFormat, create_loader
from transfer_core.datasets import Selection, create_dataset_reader, prepare_dataset
from transfer_core.distributed import Shard

folder, out, backend, classes = sys.argv[1:5]
selection = Selection() if classes == "all" else Selection(classes=[int(c) for c in classes.split(",")])
reader = create_dataset_reader("webdataset")
data = prepare_dataset("webdataset", reader.Options(path=folder), selection, Path("."), False, resolution=8)
shard = Shard(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
fmt = BatchFormat(torch.device("cpu"), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
plain = Augmentation(crop_padding=0, flip="none")
seen = {}
for split, train in (("test", False), ("train", True)):
    loader = create_loader(data, split, fmt, 8, train, plain, seed=1, backend=backend, workers=1, shard=shard)
    loader.set_epoch(2)
    batches = list(loader)
    seen[split] = {
        "steps": len(batches),
        "images": [
            [round(float(x.double().sum()), 3), int(y)] for images, labels in batches for x, y in zip(images, labels)
        ],
    }
Path(out).mkdir(parents=True, exist_ok=True)
(Path(out) / f"rank{shard.rank}.json").write_text(json.dumps(seen))
