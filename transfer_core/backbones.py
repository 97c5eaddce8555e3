"""Backbone registry: CIFAR-style ResNets defined here, plus any timm or torchvision model by name.

Every backbone becomes a ``Classifier``: a ``body`` that maps images to pooled feature vectors and a
``head`` (one Linear) sized for the task at hand. Strategies swap or freeze the two parts; nothing
else needs to know which library a model came from.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import torch
from torch import nn

from .registry import Registry, UnknownNameError


class Classifier(nn.Module):
    def __init__(self, body: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.body = body
        self.num_features = num_features
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def reset_head(self, num_classes: int) -> None:
        """A new, randomly initialised head for a task with ``num_classes`` classes."""
        self.head = nn.Linear(self.num_features, num_classes).to(self.head.weight.device)


# A body builder takes the input channel count and returns (body, feature width), and carries ``version``: the
# version of the definition it builds, in the key of everything made with it (``transfer_core/versions.py``).
BodyBuilder = Callable[[int], tuple[nn.Module, int]]
BACKBONES: Registry[BodyBuilder] = Registry("backbone", versioned=True)
# The version of how a timm or torchvision model becomes a body and head here (its classifier removed, its
# pooling kept): the library's own release is in the key besides (``bench/pipeline/plan.py``'s ``library_versions``).
EXTERNAL_BODY_VERSION = 1


class BasicBlock(nn.Module):
    def __init__(self, in_width: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_width, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_width != width:
            # a 1x1 projection (He et al.'s option B) so the residual matches in shape
            self.shortcut = nn.Sequential(nn.Conv2d(in_width, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNetBody(nn.Module):
    """ResNet for small images: a 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep their detail."""

    version = 1  # raise it in any change to the definition or its initialisation (every registered ResNet)

    def __init__(self, blocks_per_stage: list[int], widths: list[int], in_chans: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, in_width = [], widths[0]
        for i, (n_blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(BasicBlock(in_width, width, stride))
                in_width = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))  # (B, widths[-1])

    def stage_groups(self) -> list[nn.Module]:
        """The stem, then one group per resolution (a new group starts at each strided block)."""
        groups: list[list[nn.Module]] = []
        for block in self.stages:
            if not groups or block.conv1.stride != (1, 1):
                groups.append([])
            groups[-1].append(block)
        return [self.stem] + [nn.ModuleList(g) for g in groups]


def _cifar_resnet(blocks: list[int], widths: list[int]) -> BodyBuilder:
    def build(in_chans: int) -> tuple[nn.Module, int]:
        return CifarResNetBody(blocks, widths, in_chans), widths[-1]

    build.version = CifarResNetBody.version
    return build


BACKBONES.register("resnet18_cifar")(_cifar_resnet([2, 2, 2, 2], [64, 128, 256, 512]))  # 11.2M params
BACKBONES.register("resnet20")(_cifar_resnet([3, 3, 3], [16, 32, 64]))  # He et al. 2016, 0.27M params
BACKBONES.register("resnet8")(_cifar_resnet([1, 1, 1], [16, 32, 64]))  # 0.08M params, for CPU suites
BACKBONES.register("resnet8_wide")(_cifar_resnet([1, 1, 1], [32, 64, 128]))  # 0.3M params, richer features


def stage_groups(body: nn.Module) -> list[list[str]]:
    """The names of a body's parameters in parts from input to output, for freezing the first few (partial
    fine-tuning): the stem first, then each stage. CIFAR ResNets name their parts; timm models group their
    own (``group_matcher(coarse=True)``: a ViT's stem and each block, an EfficientNet's stem and each stage);
    torchvision ResNets have ``conv1``/``bn1`` and ``layer1``..``layer4``. Other torchvision architectures:
    ValueError rather than a guess."""
    if hasattr(body, "group_matcher") and not hasattr(body, "stage_groups"):  # a timm model
        from timm.models import group_parameters

        return [names for _, names in sorted(group_parameters(body, body.group_matcher(coarse=True)).items())]
    if hasattr(body, "stage_groups"):
        modules = body.stage_groups()
    else:
        children = dict(body.named_children())
        layers = sorted((name for name in children if re.fullmatch(r"layer\d+", name)), key=lambda n: int(n[5:]))
        if "conv1" not in children or not layers:
            raise ValueError(
                f"freeze_stages: the stages of a {type(body).__name__} are not known (CIFAR ResNets, timm "
                "models and torchvision ResNets are)"
            )
        modules = [nn.ModuleList([children[n] for n in ("conv1", "bn1") if n in children])] + [
            children[n] for n in layers
        ]
    named = list(body.named_parameters())
    return [[name for name, p in named if id(p) in {id(q) for q in module.parameters()}] for module in modules]


def _timm_body(name: str, in_chans: int) -> tuple[nn.Module, int]:
    import timm

    body = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)  # num_classes=0: pooled features
    return body, body.num_features


def _torchvision_body(name: str, in_chans: int) -> tuple[nn.Module, int]:
    import torchvision

    if in_chans != 3:
        raise ValueError(f"torchvision model {name} takes 3-channel images; the data has {in_chans}")
    return strip_torchvision_classifier(torchvision.models.get_model(name, weights=None), name)


def torchvision_classifier(model: nn.Module, name: str) -> str:
    """The name of a torchvision model's classifier. torchvision heads live under different names (fc,
    classifier.1, heads.head); the classifier is always the last Linear in registration order."""
    found = [module_name for module_name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not found:
        raise ValueError(f"torchvision model {name} has no Linear classifier to replace")
    return found[-1]


def strip_torchvision_classifier(model: nn.Module, name: str) -> tuple[nn.Module, int]:
    """(body, feature width): the model with its classifier replaced by an identity."""
    *path, leaf = torchvision_classifier(model, name).split(".")
    parent = model.get_submodule(".".join(path)) if path else model
    width = getattr(parent, leaf).in_features
    setattr(parent, leaf, nn.Identity())
    return model, width


def _external_library(name: str) -> tuple[str, str]:
    """Which library serves ``name``: an explicit ``timm:``/``torchvision:`` prefix, else timm, else torchvision."""
    library, _, model = name.partition(":")
    if model:
        if library not in ("timm", "torchvision"):
            raise UnknownNameError(
                f"unknown backbone library {library!r} in {name!r}; use timm:NAME or torchvision:NAME"
            )
        return library, model
    import timm

    if timm.is_model(name):
        return "timm", name
    import torchvision

    if name in torchvision.models.list_models():
        return "torchvision", name
    raise UnknownNameError(
        f"unknown backbone {name!r}; registered: {', '.join(BACKBONES.names())}, or any timm / torchvision model name"
    )


def backbone_library(name: str) -> Optional[str]:
    """The library whose code defines the backbone: None for the ones registered here, "timm" or "torchvision"."""
    return None if name in BACKBONES else _external_library(name)[0]


def backbone_version(name: str) -> int:
    """The version of the code that defines backbone ``name`` here."""
    return BACKBONES.get(name).version if name in BACKBONES else EXTERNAL_BODY_VERSION


def check_backbone(name: str) -> None:
    """Raises UnknownNameError unless ``name`` can be built."""
    if name in BACKBONES:
        return
    library, model = _external_library(name)
    if library == "timm":
        import timm

        if not timm.is_model(model):
            raise UnknownNameError(f"unknown timm model {model!r}")
    else:
        import torchvision

        if model not in torchvision.models.list_models():
            raise UnknownNameError(f"unknown torchvision model {model!r}")


def create_backbone(name: str, num_classes: int, in_chans: int = 3) -> Classifier:
    """A randomly initialised classifier (never pretrained weights: nothing is downloaded)."""
    if name in BACKBONES:
        body, width = BACKBONES.get(name)(in_chans)
    else:
        library, model = _external_library(name)
        body, width = (_timm_body if library == "timm" else _torchvision_body)(model, in_chans)
    return Classifier(body, width, num_classes)
