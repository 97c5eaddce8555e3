"""Batched, seeded augmentation as whole-batch tensor ops: identical on CPU and CUDA.

Random crops and flips are one row gather: every output pixel of every image is picked from a padded
source by a computed index, so per-image crop offsets and flips cost a single ``index_select`` instead
of a Python loop or a flipped copy of the batch. Images are NHWC here (channels innermost), which makes
one pixel one gathered row, and makes the NCHW view handed to the model channels_last for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from ..checks import check_range
from ..distributed import WHOLE, Shard

# The version of crops, flips, cutout and resizing as batched tensor ops: in the key of whatever reads
# data through this module (``transfer_core/versions.py``). Raise it in any change to the batches it yields.
VERSION = 1


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, applied per image on the device (DALI does the flips for folders)."""

    crop_padding: int = 4  # pixels of padding before a random crop back to size; 0 = no crop
    padding_mode: Literal["reflect", "zeros"] = "reflect"  # zeros = black border, as torchvision's RandomCrop
    flip: Literal["random", "alternate", "none"] = (
        "random"  # horizontal; alternate = each image mirrored every other epoch (arrays only)
    )
    cutout: int = 0  # side in pixels of one random square per image set to the mean colour; 0 = off
    random_resized_crop: float = (
        0.0  # image folders: smallest area share of a random-resized crop; 0 = resize + centre crop
    )

    def __post_init__(self):
        check_range("crop_padding", self.crop_padding, 0, None)
        check_range("cutout", self.cutout, 0, None)
        check_range("random_resized_crop", self.random_resized_crop, 0, 1)
        for name, allowed in (("padding_mode", ("reflect", "zeros")), ("flip", ("random", "alternate", "none"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")


def reflect_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source positions of a reflect-padded axis: [pad, ..., 1, 0, 1, ..., size-1, size-2, ...]."""
    positions = torch.arange(-pad, size + pad, device=device).abs()
    return torch.where(positions >= size, 2 * (size - 1) - positions, positions)


def pad_nhwc(images: torch.Tensor, pad: int, mode: str, fill: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, H, W, C) -> (B, H+2p, W+2p, C), reflect or constant padding; works for uint8 and floats.

    ``fill`` is the per-channel (C,) value of "zeros" padding: 0 for raw pixels, the normalised value
    of a black pixel for normalised ones, so both pad with black as torchvision's RandomCrop does.
    """
    if pad == 0:
        return images
    _, height, width, channels = images.shape
    if mode == "reflect":
        if pad >= min(height, width):
            raise ValueError(
                f"crop_padding {pad} must be smaller than the image ({height}x{width}) for reflect padding"
            )
        return images[:, reflect_index(height, pad, images.device)][:, :, reflect_index(width, pad, images.device)]
    padded = images.new_zeros(len(images), height + 2 * pad, width + 2 * pad, channels)
    if fill is not None:
        padded[:] = fill.to(images.dtype)
    padded[:, pad : pad + height, pad : pad + width] = images
    return padded


def crop_flip_gather(
    source: torch.Tensor,
    image_ids: torch.Tensor,
    out_size: tuple[int, int],
    dy: torch.Tensor,
    dx: torch.Tensor,
    flip: Optional[torch.Tensor],
) -> torch.Tensor:
    """Per-image crops (top-left ``dy``, ``dx``) of size ``out_size`` from padded NHWC ``source``, mirrored
    where ``flip`` is true, gathered in one op: (B,) ids -> (B, h, w, C)."""
    _, src_h, src_w, channels = source.shape
    height, width = out_size
    device = source.device
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    cols = cols.expand(len(image_ids), width) if flip is None else torch.where(flip[:, None], cols.flip(0), cols)
    first_pixel = image_ids * (src_h * src_w) + dy * src_w + dx  # (B,) flat pixel index of each crop's corner
    index = first_pixel[:, None, None] + rows[None, :, None] * src_w + cols[:, None, :]  # (B, h, w)
    pixels = source.reshape(-1, channels).index_select(0, index.reshape(-1))
    return pixels.view(len(image_ids), height, width, channels)


# Under torchrun every rank holds the same generator and a ``batch``-image slice of a global batch of
# ``batch * world`` images: each draw is made for the whole global batch and sliced to this rank's part, so
# every image gets the crop, flip and cutout it would get in a single process, and the generators stay in step.


def _drawn(values: torch.Tensor, shard: Shard) -> torch.Tensor:
    return values[shard.part(len(values))]


def random_offsets(
    batch: int, pad: int, device: torch.device, generator: Optional[torch.Generator], shard: Shard = WHOLE
) -> tuple[torch.Tensor, torch.Tensor]:
    dy = torch.randint(0, 2 * pad + 1, (batch * shard.world,), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (batch * shard.world,), device=device, generator=generator)
    return _drawn(dy, shard), _drawn(dx, shard)


def random_flips(
    batch: int, device: torch.device, generator: Optional[torch.Generator], shard: Shard = WHOLE
) -> torch.Tensor:
    return _drawn(torch.rand(batch * shard.world, device=device, generator=generator) < 0.5, shard)


def cutout(images: torch.Tensor, size: int, generator: Optional[torch.Generator], shard: Shard = WHOLE) -> torch.Tensor:
    """Zeroes one random ``size``x``size`` square per image of a normalised NCHW batch (DeVries & Taylor
    2017): zero after normalisation is the mean colour. The square may overlap the border."""
    batch, _, height, width = images.shape
    device = images.device
    cy = _drawn(torch.randint(0, height, (batch * shard.world,), device=device, generator=generator), shard)
    cx = _drawn(torch.randint(0, width, (batch * shard.world,), device=device, generator=generator), shard)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
    return images * keep[:, None].to(images.dtype)


def resize(images: torch.Tensor, resolution: Optional[int]) -> torch.Tensor:
    """Bilinear resize of a float NCHW batch to resolution x resolution, on the batch's device."""
    if resolution is None or images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(
        images,
        size=(resolution, resolution),
        mode="bilinear",
        align_corners=False,
        antialias=resolution < images.shape[-1],
    )


def augment_normalised(
    images: torch.Tensor,
    augmentation: Augmentation,
    generator: Optional[torch.Generator],
    black: torch.Tensor,
    flip: bool = True,
    shard: Shard = WHOLE,
) -> torch.Tensor:
    """Pad-crop (and flip, unless the decoder already did) of an already normalised float NCHW batch,
    as a decoder that normalises (DALI) yields. ``black`` is a black pixel's normalised value per channel."""
    batch, _, height, width = images.shape
    pad = augmentation.crop_padding
    flips = random_flips(batch, images.device, generator, shard) if flip and augmentation.flip == "random" else None
    if pad == 0 and flips is None:
        return images
    padded = pad_nhwc(images.permute(0, 2, 3, 1), pad, augmentation.padding_mode, black)
    dy, dx = random_offsets(batch, pad, images.device, generator, shard)
    ids = torch.arange(batch, device=images.device)
    return crop_flip_gather(padded, ids, (height, width), dy, dx, flips).permute(0, 3, 1, 2)


def augment_pixels(
    pixels: torch.Tensor, augmentation: Augmentation, generator: Optional[torch.Generator], shard: Shard = WHOLE
) -> torch.Tensor:
    """Random pad-crop and flip of a uint8 NHWC batch (decoded files): padded per batch, then one gather."""
    batch, height, width, _ = pixels.shape
    pad = augmentation.crop_padding
    dy, dx = random_offsets(batch, pad, pixels.device, generator, shard)
    flips = random_flips(batch, pixels.device, generator, shard) if augmentation.flip == "random" else None
    padded = pad_nhwc(pixels, pad, augmentation.padding_mode)
    return crop_flip_gather(padded, torch.arange(batch, device=pixels.device), (height, width), dy, dx, flips)
