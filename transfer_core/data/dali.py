"""Image folders through NVIDIA DALI: files read, decoded, cropped and normalised by DALI's threads
(decoding on the GPU with ``device="mixed"`` on CUDA; a CPU-only pipeline with ``device_id=None``
otherwise). This is the only module that imports ``nvidia.dali``.
"""

from __future__ import annotations

import importlib.util
from typing import Iterator

import torch

from ..datasets import FileSplit
from ..distributed import WHOLE, Shard
from .arrays import EpochBatches, seeded_generator
from .augment import Augmentation, augment_normalised
from .folders import locate_bad_images
from .format import BatchFormat, finish

READER_NAME = "files"


def dali_available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


class DaliFolderLoader(EpochBatches):
    """A DALI pipeline per epoch, seeded by the epoch, so shuffling and augmentation are reproducible.

    Training: shuffled file reader, decode, random-resized crop (or resize + centre crop), random
    mirror, normalise; the last partial batch is dropped. Evaluation: resize + centre crop, normalise,
    every file exactly once (the reader pads its last batch and the iterator trims the padding).
    Output is NHWC in memory when the model is channels_last, so the NCHW view needs no copy.

    Under torchrun the shard is passed in, never inferred: DALI's reader gives rank i the contiguous range
    [n*i/k, n*(i+1)/k) of the file list, which in training is first permuted by the epoch's seed (the same
    on every rank), so each epoch every rank reads a new disjoint part; each rank takes ``batch_size / k``
    images a step, for the same number of steps. Results do not depend on the thread count.
    """

    def __init__(
        self,
        split: FileSplit,
        fmt: BatchFormat,
        batch_size: int,
        train: bool,
        augmentation: Augmentation,
        resolution: int,
        seed: int = 0,
        threads: int = 2,
        shard: Shard = WHOLE,
    ):
        super().__init__(len(split), batch_size, train, seed, shard)
        self.split, self.fmt, self.augmentation, self.resolution = split, fmt, augmentation, resolution
        self.threads = max(1, threads)

    def _files(self) -> tuple[list[str], list[int]]:
        paths, labels = list(self.split.paths), self.split.labels.tolist()
        if self.train and self.shard.world > 1:
            order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(self.epoch_seed)).tolist()
            paths, labels = [paths[i] for i in order], [labels[i] for i in order]
        return paths, labels

    def _pipeline(self, seed: int):
        from nvidia.dali import fn, pipeline_def, types

        on_cuda = self.fmt.device.type == "cuda"
        device_id = (
            (self.fmt.device.index if self.fmt.device.index is not None else torch.cuda.current_device())
            if on_cuda
            else None
        )
        size, aug, train = self.resolution, self.augmentation, self.train
        mean, std = self.fmt.stats(255.0)
        files, file_labels = self._files()
        batch_size = self.batch_size // self.shard.world if train else self.batch_size

        @pipeline_def(batch_size=batch_size, num_threads=self.threads, device_id=device_id, seed=seed)
        def pipeline():
            encoded, labels = fn.readers.file(
                files=files,
                labels=file_labels,
                name=READER_NAME,
                random_shuffle=train,
                shard_id=self.shard.rank,
                num_shards=self.shard.world,
                pad_last_batch=not train,
                seed=seed,
            )
            images = fn.decoders.image(encoded, device="mixed" if on_cuda else "cpu", output_type=types.RGB)
            if train and aug.random_resized_crop > 0:
                images = fn.random_resized_crop(images, size=(size, size), random_area=(aug.random_resized_crop, 1.0))
            else:
                images = fn.resize(images, resize_shorter=size)
            mirror = fn.random.coin_flip(probability=0.5) if train and aug.flip == "random" else 0
            images = fn.crop_mirror_normalize(
                images,
                crop=(size, size),
                mirror=mirror,
                mean=mean.tolist(),
                std=std.tolist(),
                dtype=types.FLOAT16 if self.fmt.dtype == torch.float16 else types.FLOAT,
                output_layout="HWC" if self.fmt.channels_last else "CHW",
            )
            return images, labels.gpu() if on_cuda else labels

        return pipeline()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        pipe = self._pipeline(seed=(self.epoch_seed + 7919 * self.shard.rank) % 2**31)  # ranks augment independently
        pipe.build()
        batches = DALIGenericIterator(
            [pipe],
            ["images", "labels"],
            reader_name=READER_NAME,
            auto_reset=False,
            last_batch_policy=LastBatchPolicy.DROP if self.train else LastBatchPolicy.PARTIAL,
        )
        generator = seeded_generator(self.fmt.device, self.epoch_seed) if self.train else None
        black = self.fmt.black().to(self.fmt.dtype)
        try:
            for step, batch in enumerate(batches):
                if step == len(self):  # shards may differ by an image; every rank takes the same number of steps
                    break
                images, labels = batch[0]["images"], batch[0]["labels"]
                if self.fmt.channels_last:
                    images = images.permute(0, 3, 1, 2)
                images = images.to(self.fmt.device, non_blocking=True)
                if self.train:  # flips are done by DALI; padded crops and cutout, if asked, here
                    images = augment_normalised(
                        images, self.augmentation, generator, black, flip=False, shard=self.shard
                    )
                yield (
                    finish(images, self.fmt, self.augmentation if self.train else None, generator, shard=self.shard),
                    labels.view(-1).long().to(self.fmt.device),
                )
        except RuntimeError as e:
            if "decoders" not in str(e) and "decode" not in str(e).lower():
                raise
            raise locate_bad_images(self.split.paths) from None
        finally:
            del batches, pipe
