"""Test-time distribution shifts: corrupted copies of a test split, and other datasets mapped onto a target's
classes by name."""

from __future__ import annotations

import torch

from ..datasets import DataUnavailableError, PreparedData, Split


def corrupted_side(data: PreparedData):
    """The side a test split is corrupted at: arrays at their own size (a resize to the resolution comes after,
    in the data path), image files as evaluation decodes them, at the resolution."""
    if data.test.needs_resolution:
        return data.resolution
    return min(data.test.pixels(None).shape[1:3])


def _plain(name: str) -> str:
    """A class name as matched: case, spaces, hyphens and underscores do not matter ("Pickup Truck" = pickup_truck)."""
    return "_".join(name.lower().replace("-", " ").replace("_", " ").split())


def relabelled(split: Split, names: tuple[str, ...], target_names: tuple[str, ...], label: str) -> Split:
    """``split`` (labelled by ``names``) labelled by the target's class ids, matched by name. Every class of the
    shifted set must be one of the target's; the target may have classes the shifted set lacks."""
    index = {_plain(name): i for i, name in enumerate(target_names)}
    unknown = [name for name in names if _plain(name) not in index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DataUnavailableError(
            f"shift {label}: its classes {shown} are not classes of the target (matched by name: "
            f"{', '.join(target_names[:5])}{', ...' if len(target_names) > 5 else ''})"
        )
    mapping = torch.tensor([index[_plain(name)] for name in names], dtype=torch.int64)
    return split.relabelled(mapping[split.labels])
