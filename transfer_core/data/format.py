"""How batches leave every loader: uint8 or normalised pixels -> the model's input tensor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..distributed import WHOLE, Shard
from .augment import Augmentation, cutout, resize

# The version of normalisation, dtype and memory layout of every batch: in the key of whatever reads
# data through this module (``transfer_core/versions.py``). Raise it in any change to the batches it yields.
VERSION = 1


@dataclass(frozen=True)
class BatchFormat:
    """Device, normalisation, memory layout and dtype of the batches a loader yields."""

    device: torch.device
    mean: tuple[float, ...]  # per channel, in 0-1 pixel units
    std: tuple[float, ...]
    channels_last: bool = False
    dtype: torch.dtype = torch.float32

    def stats(self, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) times ``scale`` as (C,) float tensors on the device."""
        return (torch.tensor(self.mean, device=self.device) * scale, torch.tensor(self.std, device=self.device) * scale)

    def black(self) -> torch.Tensor:
        """The normalised value of a black pixel, per channel: what "zeros" padding fills with."""
        mean, std = self.stats()
        return -mean / std


class PixelNormaliser:
    """uint8 NHWC pixels -> normalised NCHW floats in one fused multiply-add, with the batch's late
    augmentation (cutout), resize and the format's layout and dtype."""

    def __init__(self, fmt: BatchFormat, resolution: Optional[int] = None):
        mean, std = fmt.stats(255.0)
        channels = len(fmt.mean)
        self.fmt, self.resolution = fmt, resolution
        # x/255 normalised is (x - 255*mean) / (255*std) = x * scale + shift
        self.scale = (1.0 / std).view(1, channels, 1, 1)
        self.shift = (-mean / std).view(1, channels, 1, 1)

    def __call__(
        self,
        pixels: torch.Tensor,
        augmentation: Optional[Augmentation] = None,
        generator: Optional[torch.Generator] = None,
        shard: Shard = WHOLE,
    ) -> torch.Tensor:
        # NHWC viewed as NCHW is channels_last in memory, and the multiply-add keeps that layout
        images = torch.addcmul(self.shift, pixels.permute(0, 3, 1, 2).float(), self.scale)
        return finish(images, self.fmt, augmentation, generator, self.resolution, shard)


def finish(
    images: torch.Tensor,
    fmt: BatchFormat,
    augmentation: Optional[Augmentation],
    generator: Optional[torch.Generator],
    resolution: Optional[int] = None,
    shard: Shard = WHOLE,
) -> torch.Tensor:
    """The last steps every loader shares: cutout, resize, memory layout, dtype."""
    if augmentation is not None and augmentation.cutout > 0:
        images = cutout(images, augmentation.cutout, generator, shard)
    images = resize(images, resolution)
    memory_format = torch.channels_last if fmt.channels_last else torch.contiguous_format
    return images.to(dtype=fmt.dtype, memory_format=memory_format)
