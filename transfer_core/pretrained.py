"""Pretrained sources: timm and torchvision models with published weights, or a checkpoint file.

Nothing is downloaded while a suite runs. The weights file is looked up where each library keeps it:
- ``timm:NAME.TAG``: a ``file`` given in the suite (what timm's ``pretrained_cfg_overlay=dict(file=...)``
  names; read here with timm's own ``load_state_dict``), else the Hugging Face cache (``HF_HOME``), else
  torch's hub folder (``TORCH_HOME``/hub/checkpoints);
- ``torchvision:NAME`` with ``weights: ENUM_NAME``: a ``file`` given, else torch's hub folder, under the
  file name torchvision downloads to;
- ``checkpoint: PATH`` with ``backbone: NAME``: that file, as users save them: a state dict of a whole model
  (this harness's ``body.*``/``head.*``, timm's or torchvision's with their classifier under its own name:
  ``fc``, ``head``, ``classifier``...) or of a bare body, plain or inside ``{"state_dict": ...}`` /
  ``{"model": ...}``, with DDP's ``module.`` prefixes, or a ``.safetensors`` file.
``bench fetch SUITE`` downloads what is missing while online. The file's sha256 is part of the source
model's key, so swapped weights are a different source. Keys are loaded strictly: every parameter of the
body must be in the file and nothing else but the classifier, which is kept as the source model's head
when it is one Linear layer (LEEP and NCE read the source's predictions). Inputs are normalised and sized as the
model was pretrained (its published mean, std and input size), not by the target data's statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .files import file_sha256

# The version of how a weights file becomes a source model (key mapping, the kept head): in the key of every
# pretrained source. Raise it in any change that loads a file differently.
VERSION = 1

LIBRARIES = ("timm", "torchvision")


class WeightsUnavailableError(RuntimeError):
    """The weights a pretrained source names are not on this machine (or cannot be read)."""


@dataclass(frozen=True)
class PretrainedSpec:
    library: str  # timm, torchvision or checkpoint
    model: str  # timm name with its tag, torchvision model name, or for checkpoints the backbone
    weights: Optional[str] = None  # torchvision weights enum name (IMAGENET1K_V1, DEFAULT, ...)
    file: Optional[str] = None  # an explicit weights file (required for checkpoints)
    label: str = ""  # how cells and tables name this source

    @property
    def backbone(self) -> str:
        """The backbone name the rest of the harness builds this architecture by."""
        return self.model if self.library == "checkpoint" else f"{self.library}:{self.model}"

    def describe(self) -> dict:
        return {"library": self.library, "model": self.model, "weights": self.weights}

    @property
    def fetch_hint(self) -> str:
        if self.library == "checkpoint":
            return "check the path"
        return "run `python -m bench fetch SUITE.yaml` on a machine with internet access (it fills the same caches)"


def check_spec(spec: PretrainedSpec) -> None:
    """ValueError unless the library knows the model and its pretrained weights (no file is read)."""
    if spec.library == "timm":
        import timm

        if not timm.is_model(spec.model):
            raise ValueError(f"unknown timm model {spec.model!r}")
        if timm.models.get_pretrained_cfg(spec.model) is None or not (
            _timm_cfg(spec).hf_hub_id or _timm_cfg(spec).url or spec.file
        ):
            raise ValueError(
                f"timm has no pretrained weights for {spec.model!r}; name one with its tag, e.g. resnet50.a1_in1k"
            )
    elif spec.library == "torchvision":
        _torchvision_weights(spec)
    elif spec.library == "checkpoint":
        from .backbones import check_backbone

        check_backbone(spec.model)


def _timm_cfg(spec: PretrainedSpec):
    import timm

    return timm.models.get_pretrained_cfg(spec.model)


def _torchvision_weights(spec: PretrainedSpec):
    import torchvision

    if spec.model not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision model {spec.model!r}")
    choices = torchvision.models.get_model_weights(spec.model)
    try:
        weights = choices[spec.weights or "DEFAULT"]
    except KeyError:
        raise ValueError(
            f"torchvision {spec.model} has no weights {spec.weights!r}; known: {', '.join(w.name for w in choices)}"
        ) from None
    # some weights change how torchvision builds the model (inception's input transform and auxiliary head,
    # SWAG's image size); the body here is built without weights, so those would load into another model
    if spec.model in ("inception_v3", "googlenet") or "SWAG" in weights.name:
        raise ValueError(
            f"torchvision {spec.model} {weights.name} is not supported as a pretrained source (its weights "
            "change how the model is built); use its timm counterpart"
        )
    return weights


def input_config(spec: PretrainedSpec) -> Optional[tuple[tuple[float, ...], tuple[float, ...], int]]:
    """(mean, std, input side) the model was pretrained with; None for a checkpoint (the target's own)."""
    if spec.library == "timm":
        cfg = _timm_cfg(spec)
        return tuple(cfg.mean), tuple(cfg.std), int(cfg.input_size[-1])
    if spec.library == "torchvision":
        preset = _torchvision_weights(spec).transforms()
        return tuple(preset.mean), tuple(preset.std), int(preset.crop_size[0])
    return None


def _hub_checkpoint(url: str) -> Path:
    """Where torch.hub (and so torchvision and timm) keeps a file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def candidate_files(spec: PretrainedSpec) -> list[Path]:
    """Where the weights may be, in the order looked at."""
    if spec.file:
        return [Path(spec.file).expanduser()]
    found = []
    if spec.library == "timm":
        cfg = _timm_cfg(spec)
        if cfg.hf_hub_id:
            from huggingface_hub import try_to_load_from_cache

            repo, _, revision = cfg.hf_hub_id.partition("@")
            for filename in (
                [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
            ):
                # the cache folder read now, not when huggingface_hub was imported
                cached = try_to_load_from_cache(
                    repo, filename, cache_dir=os.environ.get("HF_HUB_CACHE"), revision=revision or None
                )
                if isinstance(cached, str):
                    found.append(Path(cached))
        if cfg.url:
            found.append(_hub_checkpoint(cfg.url))
    elif spec.library == "torchvision":
        found.append(_hub_checkpoint(_torchvision_weights(spec).url))
    return found


def weights_file(spec: PretrainedSpec) -> Path:
    """The local weights file, or WeightsUnavailableError saying where it was looked for and what to do."""
    candidates = candidate_files(spec)
    for path in candidates:
        if path.is_file():
            return path
    places = ", ".join(str(p) for p in candidates) or "the Hugging Face cache (nothing cached)"
    raise WeightsUnavailableError(
        f"weights of {spec.label or spec.backbone} are not on this machine (looked in: {places}); {spec.fetch_hint}"
    )


_SHA256: dict[tuple, str] = {}


def sha256(path: Path) -> str:
    """The file's sha256, computed once per file version (path, size, modification time)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = file_sha256(path)
    return _SHA256[key]


def _read_state(path: Path) -> dict:
    """The tensors of a weights file as users save them: a state dict, or one inside ``{"state_dict": ...}`` or
    ``{"model": ...}``, with DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes taken off (timm's
    reader does all this, and reads ``.safetensors`` files by their suffix)."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as e:
        hint = ""
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__:
            hint = "; a whole pickled model is not read (it runs code): save model.state_dict() instead"
        raise WeightsUnavailableError(
            f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}){hint}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return state


def _mismatch(expected: dict, state: dict) -> Optional[str]:
    """What differs between a module's state dict and the one read, in one line; None when they fit."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = [
        f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
        f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
        f"{len(reshaped)} of another shape (e.g. {reshaped[0]})" if reshaped else "",
    ]
    return "its keys do not match the model: " + ", ".join(p for p in parts if p) if any(parts) else None


@dataclass
class LoadedModel:
    body: nn.Module
    num_features: int
    head: Optional[nn.Linear]  # the model's own classifier, when the file holds one (LEEP and NCE read it)


def _empty_body(spec: PretrainedSpec, in_chans: int) -> tuple[nn.Module, int, tuple[str, ...]]:
    """(body, feature width, the names a whole model's state dict keeps its classifier under): the architecture
    the file is loaded into, randomly initialised."""
    from .backbones import backbone_library, create_backbone, strip_torchvision_classifier, torchvision_classifier

    library, model = spec.library, spec.model
    if library == "checkpoint":
        library = backbone_library(spec.model) or "checkpoint"
        model = spec.model.split(":", 1)[-1]
    if library == "timm":
        import timm

        body = timm.create_model(model, pretrained=False, num_classes=0, in_chans=in_chans)
        names = body.pretrained_cfg.get("classifier") or ()
        return body, body.num_features, (names,) if isinstance(names, str) else tuple(names)
    if library == "torchvision":
        import torchvision

        if in_chans != 3:
            raise ValueError(f"torchvision model {model} takes 3-channel images; the data has {in_chans}")
        whole = torchvision.models.get_model(model, weights=None)
        name = torchvision_classifier(whole, model)
        body, width = strip_torchvision_classifier(whole, model)
        return body, width, (name,)
    classifier = create_backbone(spec.model, 1, in_chans)  # one of the backbones registered here
    return classifier.body, classifier.num_features, ("head",)


def _split_classifier(state: dict, names: tuple[str, ...]) -> tuple[dict, dict]:
    """(the body's tensors, the classifier's by their own names) of a whole model's state dict; a file of a
    bare body has no classifier tensors. This harness's own files keep the body under ``body.``."""
    if any(k.startswith("body.") for k in state) and "head" in names:
        body = {k.removeprefix("body."): v for k, v in state.items() if k.startswith("body.")}
        return body, {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    head, body = {}, {}
    for key, value in state.items():
        name = next((n for n in names if key.startswith(f"{n}.")), None)
        if name is None:
            body[key] = value
        else:
            head[key.removeprefix(f"{name}.")] = value
    return body, head


def _linear(head: dict, width: int) -> Optional[nn.Linear]:
    """The classifier as one Linear layer on the body's features, when it is one (else None: it is not used)."""
    weight, bias = head.get("weight"), head.get("bias")
    if set(head) - {"weight", "bias"} or weight is None or weight.ndim != 2 or weight.shape[1] != width:
        return None
    layer = nn.Linear(width, weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def check_weights(spec: PretrainedSpec, path: Path, in_chans: int) -> None:
    """WeightsUnavailableError, in one line, unless ``path`` loads into the model: read and compared by name and
    shape before anything trains (the model is built on the meta device: no memory, no initialisation)."""
    state = _read_state(path)
    try:
        with torch.device("meta"):
            body, _, names = _empty_body(spec, in_chans)
    except (RuntimeError, NotImplementedError):  # a model whose construction computes with its tensors
        body, _, names = _empty_body(spec, in_chans)
    problem = _mismatch(body.state_dict(), _split_classifier(state, names)[0])
    if problem:
        raise WeightsUnavailableError(f"{path}: {problem}")


def load_body(spec: PretrainedSpec, path: Path, in_chans: int) -> LoadedModel:
    """The pretrained model's body, its weights loaded strictly from ``path`` (every parameter, nothing else but
    the classifier), and its classifier as a Linear layer when the file holds one."""
    state = _read_state(path)
    body, width, names = _empty_body(spec, in_chans)
    body_state, head = _split_classifier(state, names)
    problem = _mismatch(body.state_dict(), body_state)
    if problem:
        raise WeightsUnavailableError(f"{path}: {problem}")
    body.load_state_dict(body_state, strict=True)
    return LoadedModel(body, width, _linear(head, width))


def fetch(spec: PretrainedSpec) -> Path:
    """Downloads the weights into the library's own cache (needs internet); returns the file."""
    if spec.library == "timm":
        import timm

        timm.create_model(spec.model, pretrained=True)
    elif spec.library == "torchvision":
        _torchvision_weights(spec).get_state_dict(progress=True)
    return weights_file(spec)
