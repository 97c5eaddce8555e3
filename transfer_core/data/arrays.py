"""Array datasets kept whole on the device: no workers, no host round trip per batch."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import torch

from ..datasets import ArraySplit
from ..distributed import WHOLE, Shard
from .augment import Augmentation, crop_flip_gather, pad_nhwc, random_flips, random_offsets
from .format import BatchFormat, PixelNormaliser

# The version of on-device array batches: shuffling, per-rank parts, augmentation order: in the key of whatever reads
# data through this module (``transfer_core/versions.py``). Raise it in any change to the batches it yields.
VERSION = 1


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class EpochBatches:
    """What every loader shares: a size in batches and an epoch counter that reseeds shuffling.

    In training the last partial batch is dropped (a tiny batch makes a noisy BatchNorm step); in
    evaluation it is kept so every example is scored once.

    Under torchrun (``shard.world > 1``) ``batch_size`` is the global batch: in training each rank yields
    its ``batch_size / world`` slice of every global batch, so all ranks take the same number of steps;
    in evaluation each rank scores a contiguous part of the split, ``batch_size`` images at a time.
    """

    def __init__(self, num_examples: int, batch_size: int, train: bool, seed: int, shard: Shard = WHOLE):
        if train and batch_size % shard.world:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {shard.world} ranks")
        self.num_examples, self.batch_size, self.train, self.seed, self.shard = (
            num_examples,
            batch_size,
            train,
            seed,
            shard,
        )
        self.scored = slice(0, num_examples) if train else shard.part(num_examples)  # evaluation: this rank's part
        self.epoch = 0

    def __len__(self) -> int:
        if self.train:
            return self.num_examples // self.batch_size
        return math.ceil((self.scored.stop - self.scored.start) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def epoch_seed(self) -> int:
        return self.seed * 100_003 + self.epoch

    def batch_bounds(self, i: int) -> slice:
        """The i-th batch: a global batch in training, a batch of this rank's part in evaluation."""
        start = self.scored.start + i * self.batch_size
        return slice(start, min(start + self.batch_size, self.scored.stop))


class DeviceBatches(EpochBatches):
    """Batches of in-memory tensors (such as cached features), shuffled per epoch by a device permutation."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool, seed: int = 0):
        super().__init__(len(labels), batch_size, train, seed)
        self.inputs, self.labels = inputs, labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.labels.device
        order = (
            torch.randperm(self.num_examples, device=device, generator=seeded_generator(device, self.epoch_seed))
            if self.train
            else None
        )
        for i in range(len(self)):
            picked = order[self.batch_bounds(i)] if order is not None else self.batch_bounds(i)
            yield self.inputs[picked], self.labels[picked]


class DeviceArrayLoader(EpochBatches):
    """A uint8 NHWC split moved to the device once; each batch is one gather plus one multiply-add.

    In training the split is padded once, up front, so a batch's random crops, flips and shuffling
    all come from a single index computation. ``flip: alternate`` mirrors each image on alternate
    epochs from a seeded random start (airbench), so every image is seen both ways every two epochs.
    """

    def __init__(
        self,
        split: ArraySplit,
        fmt: BatchFormat,
        batch_size: int,
        train: bool,
        augmentation: Augmentation,
        seed: int = 0,
        resolution: Optional[int] = None,
        shard: Shard = WHOLE,
    ):
        super().__init__(len(split), batch_size, train, seed, shard)
        device = fmt.device
        # uint8 on the device: 4x less memory and transfer than floats, converted per batch
        images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.size = tuple(images.shape[1:3])
        self.augmentation = augmentation
        self.pad = augmentation.crop_padding if train else 0
        self.pixels = pad_nhwc(images, self.pad, augmentation.padding_mode) if train else images
        self.normalise = PixelNormaliser(fmt, resolution)
        self.flip_start = None
        if train and augmentation.flip == "alternate":
            self.flip_start = (
                torch.rand(self.num_examples, device=device, generator=seeded_generator(device, seed)) < 0.5
            )

    def _flips(self, ids: torch.Tensor, generator: torch.Generator) -> Optional[torch.Tensor]:
        if self.augmentation.flip == "random":
            return random_flips(len(ids), ids.device, generator, self.shard)
        if self.augmentation.flip == "alternate":
            return self.flip_start[ids] ^ bool(self.epoch % 2)
        return None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.train:
            for i in range(len(self)):
                bounds = self.batch_bounds(i)
                yield self.normalise(self.pixels[bounds]), self.labels[bounds]
            return
        device = self.labels.device
        generator = seeded_generator(device, self.epoch_seed)
        order = torch.randperm(self.num_examples, device=device, generator=generator)
        for i in range(len(self)):
            batch = order[self.batch_bounds(i)]
            ids = batch[self.shard.part(len(batch))]  # this rank's slice of the global batch
            dy, dx = random_offsets(len(ids), self.pad, device, generator, self.shard)
            pixels = crop_flip_gather(self.pixels, ids, self.size, dy, dx, self._flips(ids, generator))
            yield self.normalise(pixels, self.augmentation, generator, self.shard), self.labels[ids]
