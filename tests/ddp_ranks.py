"""Run by torchrun in a test: the ranks train one ResNet-8 together for a few steps, each on its part of every
global batch, and each writes the sha256 of its final parameters to ``<out>/rank<k>.txt``. With gradients averaged
over the ranks the weights are equal on every rank; without, each rank would follow its own half of the data.

Usage: torchrun --nproc-per-node 2 ddp_ranks.py OUT (DDP_RANKS_NO_SYNC=1: without the averaging, a control)"""

import hashlib
import os
import sys
from pathlib import Path

import torch

from transfer_core.backbones import create_backbone
from transfer_core.data import Augmentation, BatchFormat, create_loader
from transfer_core.datasets import Digits, Selection, prepare_dataset
from transfer_core.distributed import init_process_group
from transfer_core.runtime import RuntimeSettings, resolve_runtime
from transfer_core.training import TrainRecipe, train

if os.environ.get("DDP_RANKS_NO_SYNC"):  # the test's control: the model left unwrapped, no gradient averaging
    import transfer_core.training as training

    training._data_parallel = lambda model, runtime: model
shard = init_process_group("cpu")
runtime = resolve_runtime(RuntimeSettings(device="cpu", amp="off", compile="off"), shard)
data = prepare_dataset("digits", Digits.Options(), Selection(classes=[0, 1, 2], per_class=40), Path("."), False)
torch.manual_seed(0)  # the same initial weights on every rank
model = create_backbone("resnet8", data.num_classes, data.channels)
fmt = BatchFormat(runtime.device, data.mean, data.std)
loader = create_loader(data, "train", fmt, 16, True, Augmentation(crop_padding=1, flip="none"), seed=0, shard=shard)
train(model, loader, TrainRecipe(batch_size=16, epochs=2, lr=0.1), runtime)
digest = hashlib.sha256()
# the parameters: BatchNorm's running statistics are each rank's own until DistributedDataParallel broadcasts rank
# 0's at the next forward, so after the last step they differ by design
for name, tensor in sorted(model.named_parameters()):
    digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
(Path(sys.argv[1]) / f"rank{shard.rank}.txt").write_text(digest.hexdigest())
