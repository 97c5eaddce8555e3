"""The 15 common corruptions of CIFAR-10-C / ImageNet-C (Hendrycks & Dietterich 2019), batched tensor ops.

Each corruption takes a batch of images (N, C, H, W) as float in [0, 1] on any device and returns it
corrupted; ``corrupt`` runs one over a whole uint8 split in fixed-size batches and returns uint8, as the
published ``.npy`` files are. Random draws come from one seeded CPU generator, in the same order on every
device, so a split corrupts to the same images on a CPU and on a GPU (up to float rounding).

Two tables of constants, as the authors published them:
- ``cifar``: ``make_cifar_c.py`` of github.com/hendrycks/robustness at commit 8190fe3 (32 px images);
- ``imagenet``: the ``imagecorruptions`` package 1.1.2 (Michaelis et al. 2019), ImageNet-C's constants
  adapted to any image size.
The operations follow those sources step for step (the same kernels, border modes and quantisation), on the
device, with two exceptions made on purpose:
- motion blur (and snow's) follows ``imagecorruptions``' NumPy port of ImageMagick's ``MotionBlurImage``, which
  ``make_cifar_c.py`` called through Wand; no ImageMagick is needed;
- pixelate and JPEG run through PIL image by image on the CPU, as both sources do (PIL's box filter and its JPEG
  codec are what the corruption is).
``tests/test_corruptions.py`` compares each corruption's output statistics with ``imagecorruptions`` on the
same images. The frost textures are the authors' (Apache-2.0; see ``frost/NOTICE``).

Longer than 400 lines on purpose: the 15 corruptions and their shared kernels, each beside the source lines
it follows, in the papers' order; split, a corruption would sit apart from the helpers it shares.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS = tuple(name for names in FAMILIES.values() for name in names)  # the 15, in the papers' order
FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}
SEVERITIES = (1, 2, 3, 4, 5)
CONSTANTS = ("cifar", "imagenet")
MIN_SIDE = 32  # the smallest images the sources corrupt (and the blur kernels need)

# severity 1..5 -> the constants of each corruption, per table
TABLES: dict[str, dict[str, list]] = {
    "cifar": {
        "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
        "shot_noise": [500, 250, 100, 75, 50],
        "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "zoom_blur": [(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)],
        "snow": [
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ],
        "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
        "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
        "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
        # (alpha, sigma, affine jitter) as shares of the image side
        "elastic_transform": [
            (0, 0, 0.08),
            (0.05, 0.2, 0.07),
            (0.08, 0.06, 0.06),
            (0.1, 0.04, 0.05),
            (0.1, 0.03, 0.03),
        ],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        "jpeg_compression": [80, 65, 58, 50, 40],
    },
    "imagenet": {
        "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)],
        "snow": [
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ],
        "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "fog": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        # alpha (sigma and the noise's range are shares of the side); no affine step
        "elastic_transform": [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        "jpeg_compression": [25, 18, 15, 10, 7],
    },
}


def constants_for(side: int, constants: str = "auto") -> str:
    """The table a split is corrupted with: ``auto`` takes CIFAR-10-C's for images under 96 px on a side (they
    were chosen for 32 px) and ImageNet-C's from 96 px up (chosen for 224 px)."""
    if constants != "auto":
        return constants
    return "cifar" if side < 96 else "imagenet"


@dataclass(frozen=True)
class Context:
    """What a corruption reads besides the images: its severity's constants, the table's name, the generator."""

    c: object
    table: str
    generator: torch.Generator

    def uniform(self, shape, low: float, high: float, device) -> torch.Tensor:
        return (
            (torch.rand(shape, generator=self.generator, dtype=torch.float64) * (high - low) + low).float().to(device)
        )

    def normal(self, shape, mean: float, std: float, device) -> torch.Tensor:
        return (torch.randn(shape, generator=self.generator) * std + mean).to(device)

    def integers(self, shape, low: int, high: int, device) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=self.generator).to(device)


# --- border modes and filters ------------------------------------------------------------------


def _border_index(n: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    """Indices into a dimension of size ``n`` padded by ``before`` / ``after`` under a border mode:
    ``nearest`` repeats the edge (scipy / skimage's default for gaussian), ``reflect`` is scipy's (the edge
    pixel repeated: d c b a | a b c d), ``mirror`` is OpenCV's BORDER_REFLECT_101 (c b | a b c d)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = i % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    period = max(2 * n - 2, 1)  # mirror
    i = i % period
    return torch.where(i >= n, period - i, i)


def _correlate(images: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Each channel of (N, C, H, W) correlated with a 2-D ``kernel`` (odd sides, centred), borders by ``mode``."""
    n, c, h, w = images.shape
    kh, kw = kernel.shape
    rows = _border_index(h, kh // 2, kh // 2, mode, images.device)
    cols = _border_index(w, kw // 2, kw // 2, mode, images.device)
    padded = images[:, :, rows][:, :, :, cols].reshape(n * c, 1, h + kh - 1, w + kw - 1)
    return F.conv2d(padded, kernel.to(images)[None, None]).reshape(n, c, h, w)


def _gaussian_weights(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5), normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2) if sigma > 0 else (x == 0).double()
    return (weights / weights.sum()).float()


def gaussian_filter(
    images: torch.Tensor, sigma: float | tuple[float, float], mode: str = "nearest", truncate: float = 4.0
) -> torch.Tensor:
    """skimage.filters.gaussian over the two spatial dimensions of (N, C, H, W) (separable, as scipy does);
    ``sigma`` one for both, or (rows, columns). A dimension with sigma 0 is left as it is."""
    rows, cols = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    if rows > 0:
        images = _correlate(images, _gaussian_weights(rows, truncate)[:, None], mode)
    if cols > 0:
        images = _correlate(images, _gaussian_weights(cols, truncate)[None, :], mode)
    return images


def _cv2_gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-(x**2) / (2 * sigma**2))
    return weights / weights.sum()


def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The defocus kernel of both sources: an aliased disk, antialiased by cv2.GaussianBlur (BORDER_REFLECT_101)."""
    if radius <= 8:
        span, size = torch.arange(-8, 9, dtype=torch.float64), 3
    else:
        span, size = torch.arange(-radius, radius + 1, dtype=torch.float64), 5
    y, x = torch.meshgrid(span, span, indexing="ij")
    disk = ((x**2 + y**2) <= radius**2).double()
    disk /= disk.sum()
    weights = _cv2_gaussian_kernel(size, alias_blur)
    blurred = _correlate(disk[None, None], weights[:, None], "mirror")
    return _correlate(blurred, weights[None, :], "mirror")[0, 0].float()


def _gather_shifted(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each image n moved by (dy[n], dx[n]) pixels, the edge repeated where it moved in (imagecorruptions'
    ``shift``)."""
    n, c, h, w = images.shape
    rows = (torch.arange(h, device=images.device)[None] - dy[:, None]).clamp(0, h - 1)  # (N, H)
    cols = (torch.arange(w, device=images.device)[None] - dx[:, None]).clamp(0, w - 1)  # (N, W)
    out = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def motion_blur_layer(images: torch.Tensor, radius: int, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick's MotionBlurImage as imagecorruptions ports it: a one-sided Gaussian of width 2*radius + 1
    along each image's angle, shifts past the image's side dropped (the kernel is not renormalised then)."""
    width = 2 * radius + 1
    x = torch.arange(width, dtype=torch.float64)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).tolist()
    angles = torch.deg2rad(angles_deg.double().cpu())
    blurred = torch.zeros_like(images)
    h, w = images.shape[-2:]
    alive = torch.ones(len(images), dtype=torch.bool)
    for i in range(width):
        dy = -torch.ceil(i * torch.sin(angles) - 0.5).long()
        dx = -torch.ceil(i * torch.cos(angles) - 0.5).long()
        alive &= (dy.abs() < h) & (dx.abs() < w)  # the first shift past the border ends that image's sum
        if not alive.any():
            break
        weight = (kernel[i] * alive.float()).to(images)[:, None, None, None]
        blurred += weight * _gather_shifted(images, dy.to(images.device), dx.to(images.device))
    return blurred


def clipped_zoom(images: torch.Tensor, zoom: float) -> torch.Tensor:
    """The centre 1/zoom of each image scaled back to full size (scipy.ndimage.zoom, order 1), then its centre
    cropped: make_cifar_c.py's ``clipped_zoom``, per dimension."""
    h, w = images.shape[-2:]
    ch, cw = int(math.ceil(h / zoom)), int(math.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = images[..., top : top + ch, left : left + cw]
    # scipy's zoom maps the corner pixels onto each other: bilinear with align_corners
    size = (int(round(ch * zoom)), int(round(cw * zoom)))
    zoomed = F.interpolate(crop, size=size, mode="bilinear", align_corners=True)
    trim_top, trim_left = (zoomed.shape[-2] - h) // 2, (zoomed.shape[-1] - w) // 2
    return zoomed[..., trim_top : trim_top + h, trim_left : trim_left + w]


def _gray(images: torch.Tensor) -> torch.Tensor:
    """cv2's RGB2GRAY (N, 1, H, W)."""
    if images.shape[1] == 1:
        return images
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


# --- the corruptions -----------------------------------------------------------------------------


def gaussian_noise(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    return (x + ctx.normal(x.shape, 0.0, ctx.c, x.device)).clamp(0, 1)


def shot_noise(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    return (torch.poisson((x * ctx.c).cpu().double(), generator=ctx.generator).to(x) / ctx.c).clamp(0, 1)


def impulse_noise(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    """skimage's salt & pepper: every value (each channel apart) flipped with probability c, half to 1, half to 0."""
    flipped = ctx.uniform(x.shape, 0, 1, x.device) <= ctx.c
    salted = ctx.uniform(x.shape, 0, 1, x.device) <= 0.5
    x = torch.where(flipped & salted, torch.ones_like(x), x)
    return torch.where(flipped & ~salted, torch.zeros_like(x), x)


def defocus_blur(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    radius, alias_blur = ctx.c
    return _correlate(x, _disk(radius, alias_blur), "mirror").clamp(0, 1)


def glass_blur(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Blur, quantise to uint8, shuffle pixels locally, blur again. The shuffle is the sources' sequential sweep,
    for every image at once, and does what their NumPy code does: ``x[a], x[b] = x[b], x[a]`` on pixel views
    copies rather than swaps, so each visited pixel takes the value of one at most ``delta`` away, and that one
    keeps its own. Swapping instead leaves the images sharper than the published sets."""
    sigma, delta, iterations = ctx.c
    x = torch.floor(gaussian_filter(x, sigma) * 255) / 255
    n, _, h, w = x.shape
    batch = torch.arange(n, device=x.device)
    for _ in range(iterations):
        for row in range(h - delta, delta, -1):
            offsets = ctx.integers((w - 2 * delta, n, 2), -delta, delta, x.device)  # (dx, dy) per visit
            for j, col in enumerate(range(w - delta, delta, -1)):
                other_row, other_col = row + offsets[j, :, 1], col + offsets[j, :, 0]
                x[batch, :, row, col] = x[batch, :, other_row, other_col]
    return gaussian_filter(x, sigma).clamp(0, 1)


def motion_blur(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    radius, sigma = ctx.c
    angles = ctx.uniform((len(x),), -45, 45, "cpu")
    return motion_blur_layer(x, radius, sigma, angles).clamp(0, 1)


def zoom_blur(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    start, stop, step = ctx.c
    zooms = np.arange(start, stop, step)  # the sources' own np.arange, its float steps included
    out = torch.zeros_like(x)
    for zoom in zooms:
        out += clipped_zoom(x, float(zoom))
    return ((x + out) / (len(zooms) + 1)).clamp(0, 1)


def snow(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    loc, scale, zoom, threshold, radius, sigma, keep = ctx.c
    n, _, h, w = x.shape
    layer = ctx.normal((n, 1, h, w), loc, scale, x.device)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    if ctx.table == "cifar":  # make_cifar_c.py hands ImageMagick an 8-bit layer; imagecorruptions blurs the floats
        layer = torch.floor(layer * 255) / 255
    angles = ctx.uniform((n,), -135, -45, "cpu")
    layer = torch.round(motion_blur_layer(layer, radius, sigma, angles) * 255) / 255
    x = keep * x + (1 - keep) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return (x + layer + layer.flip(-1, -2)).clamp(0, 1)


@cache
def _frost_textures() -> tuple[torch.Tensor, ...]:
    """The five frost photographs both sources draw from (frost1..5; the sixth is never drawn), RGB in [0, 1]."""
    from PIL import Image

    folder = Path(__file__).parent / "frost"
    textures = []
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"):
        with Image.open(folder / name) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        textures.append(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
    return tuple(textures)


@cache
def _scaled_frost(index: int, h: int, w: int, table: str) -> torch.Tensor:
    """A frost texture at the scale the table's source uses: a fifth of its size for CIFAR (cv2 INTER_LINEAR; for
    images that a fifth would not cover, just larger than the image), else just larger than the image, times 1.1
    (cv2 INTER_CUBIC)."""
    texture = _frost_textures()[index][None].double()
    th, tw = texture.shape[-2:]
    if table == "cifar" and round(th * 0.2) > h and round(tw * 0.2) > w:
        size, mode = (int(round(th * 0.2)), int(round(tw * 0.2))), "bilinear"
    elif table == "cifar":  # a fifth is smaller than the image (over 62 px): just larger than it, as imagecorruptions
        factor = max(h / th, w / tw) * 1.1
        size, mode = (int(math.ceil(th * factor)), int(math.ceil(tw * factor))), "bilinear"
    else:
        factor = max(1.0, h / th, w / tw) * 1.1
        size, mode = (int(math.ceil(th * factor)), int(math.ceil(tw * factor))), "bicubic"
    return F.interpolate(texture, size=size, mode=mode, align_corners=False)[0].clamp(0, 1).float()


def frost(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    keep, amount = ctx.c
    n, channels, h, w = x.shape
    picks = ctx.integers((n,), 0, 5, "cpu").tolist()
    layers = []
    for index in picks:
        texture = _scaled_frost(index, h, w, ctx.table)
        top = int(ctx.integers((1,), 0, texture.shape[1] - h, "cpu"))
        left = int(ctx.integers((1,), 0, texture.shape[2] - w, "cpu"))
        layers.append(texture[:, top : top + h, left : left + w])
    layer = torch.stack(layers).to(x)
    if channels == 1:
        layer = _gray(layer)
    return (keep * x + amount * layer).clamp(0, 1)


def _plasma_fractal(n: int, size: int, decay: float, ctx: Context) -> torch.Tensor:
    """The sources' diamond-square height maps, (N, size, size) in [0, 1], one per image."""
    maps = torch.zeros((n, size, size), dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled(total: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(total.shape, generator=ctx.generator, dtype=torch.float64) * 2 * wibble - wibble
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = maps[:, 0:size:step, 0:size:step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        maps[:, half:size:step, half:size:step] = wibbled(squares)
        centres = maps[:, half:size:step, half:size:step]
        corners = maps[:, 0:size:step, 0:size:step]
        maps[:, 0:size:step, half:size:step] = wibbled(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        maps[:, half:size:step, 0:size:step] = wibbled(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    low = maps.amin(dim=(1, 2), keepdim=True)
    maps = maps - low
    return maps / maps.amax(dim=(1, 2), keepdim=True)


def fog(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    amount, decay = ctx.c
    n, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()
    layer = _plasma_fractal(n, size, decay, ctx)[:, None, :h, :w].to(x)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + amount * layer) * peak / (peak + amount)).clamp(0, 1)


def brightness(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    """V + c in HSV. With hue and saturation kept, RGB scales with V, so no round trip through HSV is needed;
    a black pixel (V = 0, no hue) becomes grey at V = c, as skimage's hsv2rgb makes it."""
    if x.shape[1] == 1:
        return (x + ctx.c).clamp(0, 1)
    value = x.amax(dim=1, keepdim=True)
    brighter = (value + ctx.c).clamp(max=1)
    scaled = x * brighter / value.clamp_min(1e-12)
    return torch.where(value > 0, scaled, brighter.expand_as(x)).clamp(0, 1)


def contrast(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)
    return ((x - means) * ctx.c + means).clamp(0, 1)


def _sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, corners: bool) -> torch.Tensor:
    """Bilinear samples of each image at pixel coordinates (N, H, W), reflected at the borders: about the edge
    pixels' centres with ``corners`` (OpenCV's BORDER_REFLECT_101), about the image's edges without (scipy's
    ``reflect``)."""
    h, w = x.shape[-2:]
    if corners:
        grid = torch.stack([2 * cols / (w - 1) - 1, 2 * rows / (h - 1) - 1], dim=-1)
    else:
        grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="reflection", align_corners=corners)


def _cifar_affine(x: torch.Tensor, jitter: float, ctx: Context) -> torch.Tensor:
    """make_cifar_c.py's random affine: three points around the centre moved by up to ``jitter`` pixels,
    cv2.warpAffine (bilinear, BORDER_REFLECT_101)."""
    n, _, h, w = x.shape
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64)  # float32(shape) // 2 in the source
    square = min(h, w) // 3
    src = torch.stack([centre + square, torch.stack([centre[0] + square, centre[1] - square]), centre - square])
    dst = src[None] + (torch.rand((n, 3, 2), generator=ctx.generator, dtype=torch.float64) * 2 - 1) * jitter
    # the affine map from src to dst for each image: dst = [src, 1] @ A (A: 3x2); warpAffine samples src at A^-1
    ones = torch.ones(3, 1, dtype=torch.float64)
    maps = torch.linalg.solve(torch.cat([src, ones], 1)[None].expand(n, 3, 3), dst)  # (N, 3, 2)
    forward = torch.cat([maps.transpose(1, 2), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(n, 1, 3)], 1)
    inverse = torch.linalg.inv(forward)  # (N, 3, 3) in cv2's (x, y) point order, here the source's (shape order)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # cv2 points are (x, y)
    sources = torch.einsum("nij,pj->npi", inverse, points)[..., :2].reshape(n, h, w, 2)
    return _sample(x, sources[..., 1].float(), sources[..., 0].float(), corners=True)


def elastic_transform(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    n, _, h, w = x.shape
    if ctx.table == "cifar":
        alpha, sigma, jitter = (value * h for value in ctx.c)
        x = _cifar_affine(x, jitter, ctx)
        low, high, sigmas = -1.0, 1.0, (sigma, sigma)
    else:
        alpha = ctx.c
        low, high, sigmas = -h * 0.005, h * 0.005, (h * 0.01, w * 0.01)
    fields = []
    for _ in range(2):  # dx, then dy, as the sources draw them
        noise = torch.rand((n, 1, h, w), generator=ctx.generator, dtype=torch.float64) * (high - low) + low
        smooth = gaussian_filter(noise, sigmas, "reflect", truncate=3.0)
        fields.append((smooth[:, 0] * alpha).float())
    dx, dy = fields
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return _sample(x, ys + dy, xs + dx, corners=False).clamp(0, 1)


def _pil_each(x: torch.Tensor, change: Callable) -> torch.Tensor:
    """Each image through a PIL operation, as 8-bit pixels (the sources hand PIL the uint8 image)."""
    from PIL import Image

    pixels = _to_uint8(x).cpu().numpy()
    out = []
    for image in pixels:
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        changed = np.asarray(change(pil), dtype=np.float32).reshape(image.shape)
        out.append(torch.from_numpy(changed))
    return (torch.stack(out) / 255).permute(0, 3, 1, 2).to(x)


def pixelate(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    from PIL import Image

    h, w = x.shape[-2:]
    up = Image.BOX if ctx.table == "cifar" else Image.NEAREST

    def change(image):
        return image.resize((int(w * ctx.c), int(h * ctx.c)), Image.BOX).resize((w, h), up)

    return _pil_each(x, change)


def jpeg_compression(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    from PIL import Image

    def change(image):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=ctx.c)
        with Image.open(buffer) as compressed:
            return compressed.convert(image.mode)

    return _pil_each(x, change)


OPERATIONS: dict[str, Callable[[torch.Tensor, Context], torch.Tensor]] = {name: globals()[name] for name in CORRUPTIONS}
ON_CPU_ONLY = ("pixelate", "jpeg_compression")  # PIL, image by image
# the sources truncate float64 values to uint8; float32 arithmetic lands a clean 100.0 at 99.99999, which would
# truncate to 99: this margin (in 0-255 levels) absorbs that rounding, and moves values within it of the next
# level up one level where the sources would not
QUANTISE_MARGIN = 1e-3


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, H, W, C) uint8, truncated as the sources' np.uint8(...) truncates."""
    return torch.floor(x.clamp(0, 1) * 255 + QUANTISE_MARGIN).to(torch.uint8).permute(0, 2, 3, 1)


# in the key of every corrupted split: raised when a change here changes the images a split corrupts to, so
# cached splits (and the shift evaluations that read them) are made again, and nothing else is
VERSION = 2


def _batch_size(images: torch.Tensor) -> int:
    """Images per batch: about 16 M values, fixed by the image size alone, so the draws (one generator, batch
    after batch) are the same on every device."""
    per_image = int(np.prod(images.shape[1:]))
    return max(1, (1 << 24) // per_image)


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    seed: int,
    constants: str = "auto",
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] = lambda done: None,
) -> torch.Tensor:
    """``images`` (N, H, W, C) uint8 corrupted by ``name`` at ``severity`` (1-5): (N, H, W, C) uint8, on the CPU.
    ``seed`` fixes every random draw; ``constants``: ``cifar``, ``imagenet`` or ``auto`` (``constants_for``).
    ``progress`` is called with the images done after each batch."""
    if name not in OPERATIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity}: expected 1 to 5")
    n, h, w, channels = images.shape
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"images of {h}x{w} px: corruptions need at least {MIN_SIDE} px on a side")
    table = constants_for(min(h, w), constants)
    if table not in TABLES:
        raise ValueError(f"constants {constants!r}: expected auto, cifar or imagenet")
    generator = torch.Generator().manual_seed(seed)
    ctx = Context(TABLES[table][name][severity - 1], table, generator)
    operation = OPERATIONS[name]
    where = torch.device("cpu") if name in ON_CPU_ONLY else torch.device(device)
    out = torch.empty_like(images)
    step = _batch_size(images)
    for start in range(0, n, step):
        batch = images[start : start + step].to(where).permute(0, 3, 1, 2).float() / 255
        corrupted = operation(batch, ctx)
        out[start : start + step] = _to_uint8(corrupted).cpu()
        progress(min(start + step, n))
    return out
