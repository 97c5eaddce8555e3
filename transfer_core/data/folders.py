"""Image folders through torchvision + DataLoader workers: the fallback when DALI is not installed.

Workers decode each file to uint8 at the target resolution (random-resized crop in training when
asked, else resize + centre crop); pad-crop, flips, normalisation and cutout then run batched on the
device, as for array datasets.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from ..datasets import Augmentation, BadImageError, FileSplit, decode_error
from .arrays import EpochBatches, seeded_generator
from .augment import augment_pixels
from .format import BatchFormat, PixelNormaliser


def locate_bad_images(paths: Sequence[str]) -> BadImageError:
    """After a decoder failed somewhere in ``paths`` without saying where: finds the files that do not
    decode, so the error names them."""
    bad = []
    for path in tqdm(paths, desc="finding the file that failed to decode", unit="file", leave=False, disable=None):
        reason = decode_error(path)
        if reason is not None:
            bad.append(f"{path} ({reason})")
    if not bad:
        return BadImageError("an image failed to decode, yet every file decodes with PIL; rerun with data_backend: torch")
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    return BadImageError(f"cannot decode {len(bad)} image file(s): {shown}. Remove them or set bad_files: skip on the dataset")


class _DecodedFiles(torch.utils.data.Dataset):
    """One file -> uint8 HWC at resolution x resolution, in a worker process."""

    def __init__(self, split: FileSplit, resolution: int, random_resized_crop: float):
        from torchvision import transforms

        self.split = split
        if random_resized_crop > 0:
            self.transform = transforms.RandomResizedCrop(resolution, scale=(random_resized_crop, 1.0))
        else:
            self.transform = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution)])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path = self.split.paths[i]
        try:
            with Image.open(path) as image:
                image = self.transform(image.convert("RGB"))
        except Exception as e:
            raise BadImageError(f"cannot decode image {path} ({type(e).__name__}: {e}). "
                                "Remove it or set bad_files: skip on the dataset") from None
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return pixels.view(image.height, image.width, 3), int(self.split.labels[i])


class TorchFolderLoader(EpochBatches):
    def __init__(self, split: FileSplit, fmt: BatchFormat, batch_size: int, train: bool, augmentation: Augmentation,
                 resolution: int, seed: int = 0, workers: int = 0):
        super().__init__(len(split), batch_size, train, seed)
        self.split, self.fmt, self.augmentation, self.workers = split, fmt, augmentation, workers
        self.files = _DecodedFiles(split, resolution, augmentation.random_resized_crop if train else 0.0)
        self.normalise = PixelNormaliser(fmt)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = self.epoch_seed
        loader = torch.utils.data.DataLoader(
            self.files, batch_size=self.batch_size, shuffle=self.train, drop_last=self.train,
            num_workers=self.workers, generator=torch.Generator().manual_seed(seed),
            pin_memory=self.fmt.device.type == "cuda",
        )
        generator = seeded_generator(self.fmt.device, seed) if self.train else None
        try:
            for pixels, labels in loader:
                pixels = pixels.to(self.fmt.device, non_blocking=True)
                if self.train:
                    pixels = augment_pixels(pixels, self.augmentation, generator)
                yield self.normalise(pixels, self.augmentation if self.train else None, generator), labels.to(self.fmt.device)
        except BadImageError as e:
            # a worker's error arrives wrapped in its traceback; its last line is our message
            raise BadImageError(str(e).strip().splitlines()[-1].removeprefix("BadImageError: ")) from None
