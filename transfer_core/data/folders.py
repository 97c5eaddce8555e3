"""Image folders through torchvision + DataLoader workers: the fallback when DALI is not installed.

Workers decode each file to uint8 at the target resolution (random-resized crop in training when
asked, else resize + centre crop); pad-crop, flips, normalisation and cutout then run batched on the
device, as for array datasets. A file's random-resized crop is seeded by the epoch and the file, so
results do not depend on the number of workers or on which worker decodes it.
"""

from __future__ import annotations

from typing import Iterator

import torch
from tqdm import tqdm

from ..datasets import BadImageError, EncodedImages, decode_error
from ..distributed import WHOLE, Shard
from .arrays import EpochBatches, seeded_generator
from .augment import Augmentation, augment_pixels
from .format import BatchFormat, PixelNormaliser

# The version of torchvision decoding of encoded images and their augmentation: in the key of whatever reads
# data through this module (``transfer_core/versions.py``). Raise it in any change to the batches it yields.
VERSION = 1


def locate_bad_images(split: EncodedImages) -> BadImageError:
    """After a decoder failed somewhere in ``split`` without saying where: finds the images that do not
    decode, so the error names them."""
    bad = []
    for i in tqdm(
        range(len(split)), desc="finding the image that failed to decode", unit="image", leave=False, disable=None
    ):
        reason = decode_error(split.open(i))
        if reason is not None:
            bad.append(f"{split.item_name(i)} ({reason})")
    if not bad:
        return BadImageError(
            "an image failed to decode, yet every image decodes with PIL; rerun with data_backend: torch"
        )
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    fix = " or set bad_files: skip on the dataset" if split.kind == "files" else ""
    return BadImageError(f"cannot decode {len(bad)} image(s): {shown}. Remove them{fix}")


class _DecodedFiles(torch.utils.data.Dataset):
    """One encoded image (a file, or bytes in a container) -> uint8 HWC at resolution x resolution, in a
    worker process."""

    def __init__(self, split: EncodedImages, resolution: int, random_resized_crop: float):
        from torchvision import transforms

        self.split = split
        self.random = random_resized_crop > 0
        self.epoch_seed = 0  # set by the loader before each epoch's workers start
        if self.random:
            self.transform = transforms.RandomResizedCrop(resolution, scale=(random_resized_crop, 1.0))
        else:
            self.transform = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution)])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        try:
            with Image.open(self.split.open(i)) as image, torch.random.fork_rng(devices=[], enabled=self.random):
                if self.random:  # torchvision draws crops from the global CPU generator: seed it for this file
                    torch.default_generator.manual_seed(self.epoch_seed * 1_000_003 + i)
                image = self.transform(image.convert("RGB"))
        except Exception as e:
            fix = " or set bad_files: skip on the dataset" if self.split.kind == "files" else ""
            raise BadImageError(
                f"cannot decode image {self.split.item_name(i)} ({type(e).__name__}: {e}). Remove it{fix}"
            ) from None
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return pixels.view(image.height, image.width, 3), int(self.split.labels[i])


class TorchFolderLoader(EpochBatches):
    def __init__(
        self,
        split: EncodedImages,
        fmt: BatchFormat,
        batch_size: int,
        train: bool,
        augmentation: Augmentation,
        resolution: int,
        seed: int = 0,
        workers: int = 0,
        shard: Shard = WHOLE,
    ):
        super().__init__(len(split), batch_size, train, seed, shard)
        self.split, self.fmt, self.augmentation, self.workers = split, fmt, augmentation, workers
        self.files = _DecodedFiles(split, resolution, augmentation.random_resized_crop if train else 0.0)
        self.normalise = PixelNormaliser(fmt)

    def _order(self) -> list[int]:
        """The files this rank reads this epoch, in order: in training, its slice of each shuffled global batch."""
        if not self.train:
            return list(range(self.scored.start, self.scored.stop))
        shuffled = torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(self.epoch_seed))
        return [
            i
            for step in range(len(self))
            for i in shuffled[self.batch_bounds(step)][self.shard.part(self.batch_size)].tolist()
        ]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.files.epoch_seed = self.epoch_seed
        loader = torch.utils.data.DataLoader(
            self.files,
            batch_size=self.batch_size // self.shard.world if self.train else self.batch_size,
            sampler=self._order(),
            num_workers=self.workers,
            pin_memory=self.fmt.device.type == "cuda",
        )
        generator = seeded_generator(self.fmt.device, self.epoch_seed) if self.train else None
        try:
            for pixels, labels in loader:
                pixels = pixels.to(self.fmt.device, non_blocking=True)
                if self.train:
                    pixels = augment_pixels(pixels, self.augmentation, generator, self.shard)
                yield (
                    self.normalise(pixels, self.augmentation if self.train else None, generator, self.shard),
                    labels.to(self.fmt.device),
                )
        except BadImageError as e:
            # a worker's error arrives wrapped in its traceback; its last line is our message
            raise BadImageError(str(e).strip().splitlines()[-1].removeprefix("BadImageError: ")) from None
