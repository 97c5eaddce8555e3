"""Test-time distribution shifts a target lists (``shifts:``): what each is, and how a suite names them.

Two kinds, each scored by every model a cell's result is built from, never used to choose anything:
- ``{corruptions: [...], severities: [...]}``: the target's own test split corrupted as in CIFAR-10-C /
  ImageNet-C (``transfer_core/shifts/corruptions.py``), one shift per corruption and severity;
- ``{dataset: NAME, ...}``: another dataset whose classes carry the target's class names (CIFAR-10.1,
  CINIC-10, a folder of the user's), its labels mapped to the target's by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from bench.errors import SuiteError as ShiftError  # a shifts: entry that cannot be used is a suite's mistake
from transfer_core.shifts.corruptions import CONSTANTS, CORRUPTIONS, FAMILIES, FAMILY_OF, SEVERITIES


@dataclass(frozen=True)
class CorruptionShift:
    corruption: str
    severity: int
    seed: int = 0  # fixes every random draw of the corruption
    constants: str = "auto"  # cifar, imagenet, or auto (by image size)
    kind = "corruption"

    @property
    def label(self) -> str:
        return f"{self.corruption}/{self.severity}"

    @property
    def family(self) -> str:
        return FAMILY_OF[self.corruption]

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "corruption": self.corruption,
            "severity": self.severity,
            "seed": self.seed,
            "constants": self.constants,
        }


@dataclass(frozen=True)
class DatasetShift:
    data: Any  # a DatasetSpec: the other dataset, read like a target
    split: str = "test"  # which of its splits is scored
    kind = "dataset"

    @property
    def label(self) -> str:
        return self.data.label

    @property
    def family(self) -> None:
        return None

    def describe(self) -> dict:
        return {"kind": self.kind, "data": self.data.describe(located=False), "split": self.split}


Shift = CorruptionShift | DatasetShift

_CORRUPTION_KEYS = {"corruptions", "severities", "seed", "constants"}


def _corruption_names(raw: Any, where: str) -> list[str]:
    """``all``, a family name, or a list of corruption and family names."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ShiftError(f"{where}: expected all, a family ({', '.join(FAMILIES)}) or a list of corruption names")
    names: list[str] = []
    for item in items:
        found = CORRUPTIONS if item == "all" else FAMILIES.get(item, (item,))
        for name in found:
            if name not in CORRUPTIONS:
                raise ShiftError(f"{where}: unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
            if name not in names:
                names.append(name)
    return names


def parse_shifts(raw: Any, where: str, parse_dataset: Callable[[dict, str], Any]) -> tuple[Shift, ...]:
    """A target's ``shifts:`` list. ``parse_dataset(mapping, where)`` reads a dataset entry as the suite reads a
    target's (it takes the extra key ``split``)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ShiftError(f"{where}: expected a list, e.g. [{{corruptions: all, severities: [3, 5]}}]")
    shifts: list[Shift] = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict) or ("corruptions" in entry) == ("dataset" in entry):
            raise ShiftError(
                f"{at}: expected a mapping with corruptions: (a corrupted test split) or dataset: (another dataset)"
            )
        if "dataset" in entry:
            split = entry.get("split", "test")
            if split not in ("test", "train"):
                raise ShiftError(f"{at}.split: expected test or train, got {split!r}")
            shifts.append(DatasetShift(parse_dataset({k: v for k, v in entry.items() if k != "split"}, at), split))
            continue
        unknown = set(entry) - _CORRUPTION_KEYS
        if unknown:
            raise ShiftError(
                f"{at}: unknown key {sorted(unknown)[0]!r}; a corruption entry takes "
                f"{', '.join(sorted(_CORRUPTION_KEYS))}"
            )
        names = _corruption_names(entry["corruptions"], f"{at}.corruptions")
        severities = entry.get("severities", list(SEVERITIES))
        if (
            not isinstance(severities, list)
            or not severities
            or not all(isinstance(s, int) and not isinstance(s, bool) and s in SEVERITIES for s in severities)
        ):
            raise ShiftError(f"{at}.severities: expected a list of integers from 1 to 5, got {severities!r}")
        seed = entry.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ShiftError(f"{at}.seed: expected an integer, got {seed!r}")
        constants = entry.get("constants", "auto")
        if constants not in ("auto", *CONSTANTS):
            raise ShiftError(f"{at}.constants: expected auto, {' or '.join(CONSTANTS)}, got {constants!r}")
        shifts += [CorruptionShift(name, severity, seed, constants) for name in names for severity in severities]
    labels = [s.label for s in shifts]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise ShiftError(f"{where}: {label} is listed twice")
    return tuple(shifts)
