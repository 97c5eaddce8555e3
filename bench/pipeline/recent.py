"""What a builder read from the model cache lately, kept in memory within a byte budget.

A cell's shift evaluations score the same models once per shift, and a seed's cells the same corrupted test
splits once per cell: without this, each shift evaluation reads and hashes its models and its split from disk
again. Kept here, each is read once per builder: the local executor's, or a Ray worker's for as long as the
worker lives (each worker holds its own, up to the budget, in host memory for splits and on its device for
models; submitit's one-job-per-artifact builders gain nothing). The builder keeps models only across
consecutive shift evaluations (and the corrupting between them), so they sit in no other artifact's
memory. Only what is read and never changed is kept: shift evaluations score models (α-mix mixes copies of
them) and never train them. A cell whose models together exceed the budget reads them every time, as
before (least recently used goes first, and the cell reads them in the same order each time).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Optional

import torch

# the models and splits of a few cells at once (a CIFAR split of 5,000 images is 15 MB, a ResNet-18 45 MB); an
# item larger than this is read every time, as before
RECENT_BYTES = 1 << 30


def tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def model_bytes(model: torch.nn.Module) -> int:
    return tensor_bytes(*model.state_dict().values())


class Recent:
    """Least recently used out first, within ``max_bytes``."""

    def __init__(self, max_bytes: Optional[int] = None):
        self.max_bytes = RECENT_BYTES if max_bytes is None else max_bytes
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple, load: Callable[[], Any], size: Callable[[Any], int]) -> Any:
        """The value kept under ``key``, else ``load()``'s, kept when ``size`` of it fits the budget."""
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key][0]
        self.misses += 1
        value = load()
        nbytes = size(value)
        if nbytes <= self.max_bytes:
            self._items[key] = (value, nbytes)
            while sum(n for _, n in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
