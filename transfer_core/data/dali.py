"""Image folders through NVIDIA DALI: files read, decoded, cropped and normalised by DALI's threads
(decoding on the GPU with ``device="mixed"`` on CUDA; a CPU-only pipeline with ``device_id=None``
otherwise). This is the only module that imports ``nvidia.dali``.
"""

from __future__ import annotations

import importlib.util
from typing import Iterator

import numpy as np
import torch

from ..datasets import EncodedImages
from ..datasets.webdataset import whole_shards
from ..distributed import WHOLE, Shard
from .arrays import EpochBatches, seeded_generator
from .augment import Augmentation, augment_normalised
from .folders import locate_bad_images
from .format import BatchFormat, finish

# The version of the DALI pipelines: decoding, resizing, crops and flips: in the key of whatever reads
# data through this module (``transfer_core/versions.py``). Raise it in any change to the batches it yields.
VERSION = 1

READER_NAME = "reader"
SHARD_IMAGE_EXTENSIONS = "jpg;jpeg;png;webp"  # a WebDataset sample's image, by its member's extension
LABEL_TEXT_BYTES = 20  # a WebDataset sample's ``.cls`` member: its label as decimal text, padded to this length


def _labels(labels: torch.Tensor) -> torch.Tensor:
    """(B,) int64 labels from what the reader gave: numbers, or (WebDataset) ``.cls`` text padded with spaces."""
    if labels.dtype != torch.uint8:
        return labels.view(-1).long()
    return torch.tensor([int(bytes(row).decode()) for row in labels.cpu().tolist()], dtype=torch.int64)


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
        split: EncodedImages,
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

    def _order(self) -> list[list[int]]:
        """The images this rank reads this epoch, batch by batch (for splits fed by ``external_source``): in
        training, its slice of each shuffled global batch; in evaluation, its part of the split, in order."""
        if not self.train:
            scored = list(range(self.scored.start, self.scored.stop))
            return [scored[i : i + self.batch_size] for i in range(0, len(scored), self.batch_size)]
        shuffled = torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(self.epoch_seed))
        return [
            shuffled[self.batch_bounds(step)][self.shard.part(self.batch_size)].tolist() for step in range(len(self))
        ]

    def _read(self, fn, types, seed: int, batch_size: int):
        """The pipeline's first node, by the kind of split: (encoded images, labels). Files: DALI's file reader.
        Evaluation of whole WebDataset shards in their own order and labels: DALI's webdataset reader. Any other
        encoded split (training, which shuffles the whole split as every backend does, where the webdataset
        reader only shuffles within a buffer of shards read in order; a selection of shards; a Hugging Face
        table): this process reads the bytes, batch by batch, and hands them to ``external_source``."""
        train = self.train
        sharding = dict(shard_id=self.shard.rank, num_shards=self.shard.world, pad_last_batch=not train, seed=seed)
        if self.split.kind == "files":
            files, file_labels = self._files()
            return fn.readers.file(
                files=files, labels=file_labels, name=READER_NAME, random_shuffle=train, **sharding
            ), True
        whole = None if train else whole_shards(self.split)
        if whole is not None:
            tars, indexes = whole
            encoded, text = fn.readers.webdataset(
                paths=tars,
                index_paths=indexes,
                ext=[SHARD_IMAGE_EXTENSIONS, "cls"],
                name=READER_NAME,
                case_sensitive_extensions=False,  # as the index reads them: 0001.JPG is an image
                missing_component_behavior="error",
                **sharding,
            )
            return (encoded, fn.pad(text, shape=[LABEL_TEXT_BYTES], fill_value=32)), True  # padded with spaces
        order, split = self._order(), self.split

        def batches(info):  # DALI asks for batch ``info.iteration``; StopIteration ends the epoch
            if info.iteration >= len(order):
                raise StopIteration
            chosen = order[info.iteration]
            return (
                [np.frombuffer(split.read(i), dtype=np.uint8) for i in chosen],
                [np.array([split.labels[i]], dtype=np.int64) for i in chosen],
            )

        encoded, labels = fn.external_source(
            source=batches, num_outputs=2, batch=True, batch_info=True, dtype=[types.UINT8, types.INT64]
        )
        return (encoded, labels), False

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
        batch_size = self.batch_size // self.shard.world if train else self.batch_size

        @pipeline_def(batch_size=batch_size, num_threads=self.threads, device_id=device_id, seed=seed)
        def pipeline():
            (encoded, labels), self.has_reader = self._read(fn, types, seed, batch_size)
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

        if len(self) == 0:  # nothing for this rank (fewer images than ranks): DALI would refuse an empty epoch
            return
        pipe = self._pipeline(seed=(self.epoch_seed + 7919 * self.shard.rank) % 2**31)  # ranks augment independently
        pipe.build()
        batches = DALIGenericIterator(
            [pipe],
            ["images", "labels"],
            reader_name=READER_NAME if self.has_reader else None,
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
                    _labels(labels).to(self.fmt.device),
                )
        except RuntimeError as e:
            if "decoders" not in str(e) and "decode" not in str(e).lower():
                raise
            raise locate_bad_images(self.split) from None
        finally:
            del batches, pipe
