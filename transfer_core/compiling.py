"""When torch.compile pays for a training on CPU (``compile: auto``), and what compiling cost before.

The rule, applied by ``train`` under ``Runtime.compile_when == "pays"``: a training runs its first steps
eager; after ``WARMUP_STEPS`` (allocations, oneDNN's first-call work) it times ``PROBE_STEPS`` more, then
compiles the model for the rest when

    forgone + remaining steps x measured eager step seconds x (1 - 1 / speedup)  >  expected compile seconds,

that is, when the time compiling would save, over the rest of this training and over the earlier trainings
of the same graph that stayed eager (``forgone``), exceeds what compiling costs: the ski-rental rule, which
never spends more than twice the better choice in hindsight. A suite of many short trainings of one graph
(a seed's scratch, fine-tune, LP-FT, ...) therefore compiles once their sum pays, and every later training
of that graph in the process reuses the compiled graph. The numbers are measurements of this graph (its
model class, parameter shapes, which of them train, input shape and dtype, precision, compile mode, torch
version and thread count):
- expected compile seconds: what reusing it last cost in this process (the compiled graph is reused by a
  new model of the same shapes: ``REUSE_COMPILE_S`` until measured), else what it last cost in a fresh
  process with this cache folder with inductor's kernels on disk (1.7 s for ResNet-8 on 2 Zen 4 cores,
  against 38 s cold); after only a cold compile there, whose kernels are now on disk, ``WARM_FRACTION`` of
  its cost; else ``COLD_COMPILE_S``;
- speedup: compiled over eager step time, as last measured for this graph, else ``ASSUMED_SPEEDUP``;
- forgone: the savings projected by the trainings of this graph that stayed eager since it last compiled.
Each is kept in ``<compile_cache>/compile_costs.json``, so the next run decides with this machine's numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from filelock import FileLock

from .files import write_file

WARMUP_STEPS = 2  # eager steps before timing: the first pays allocations and oneDNN's kernel setup
PROBE_STEPS = 5  # eager steps timed for the projection
# measured on 2 Zen 4 cores (ResNet-8, batch 128, bf16 + channels_last, cold inductor cache): 38 s; a larger
# model compiles longer, so this errs toward not compiling until a real compile of the graph was measured
COLD_COMPILE_S = 40.0
# a prior until this graph's own speedup is measured. What compiling bought the eager bf16 + channels_last step
# of ResNet-8 on 2 Zen 4 cores: 1.06x in a bare loop, 0.95-1.03x inside the harness (cifar-cpu's trainings),
# about 1.2x with 1 thread. The prior is that measurement, not a hope: a prior of 1.3 made every fresh cache
# folder pay a 25 s cold compile that bought nothing on that suite. With 1.05 a graph compiles once about
# 20 x its compile time of eager training has gone by (40 s cold: some 13 minutes of it), and learns its speedup
ASSUMED_SPEEDUP = 1.05
# inductor keeps a compiled graph's kernels on disk in the cache folder, so the next fresh process compiles it
# in a fraction of a cold compile's time: ResNet-8 on 2 Zen 4 cores, 1.7 s against 38 s in a bare loop and 25 s
# in the harness (0.045-0.07). Until that warm cost is measured, a cold compile's seconds times this are expected
WARM_FRACTION = 0.1
# where an expected compile cost came from (``details["expected_compile_from"]``); the two from the cache folder
# follow a compile of the graph there, whose kernels inductor keeps on disk
FROM_THIS_PROCESS, FROM_DEFAULT = "this process", "cold default"
FROM_CACHE, FROM_CACHE_AFTER_COLD = "cache", "cache: a cold compile x WARM_FRACTION"
# measured there: a second model of the same graph in one process finds its compiled code in 0.06-0.08 s;
# the estimate for a graph this process compiled, until a reuse of it was measured
REUSE_COMPILE_S = 0.1

_IN_PROCESS: dict[str, float] = {}  # signature -> compile seconds, for graphs compiled in this process
_COMPILED_HERE: set[str] = set()  # graphs this process has compiled: the first compile of each is its cost
_COMPILES_HERE = itertools.count(1)  # numbers this process's compiles, so records sharing one count it once
_NO_FOLDER: dict[str, dict] = {}  # the costs of a runtime without a cache folder: this process's only


def graph_signature(model: torch.nn.Module, images: torch.Tensor, amp: str, channels_last: bool, mode: str) -> str:
    """What decides whether a compiled graph (and its measured cost) carries over to another training."""
    described = {
        "model": type(model).__qualname__,
        "parameters": [(name, list(p.shape), p.requires_grad) for name, p in model.named_parameters()],
        "input": [list(images.shape), str(images.dtype)],
        "amp": amp,
        "channels_last": channels_last,
        "mode": mode,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def compile_entry(signature: str, seconds: float) -> dict:
    """One compile as the records keep it. A graph's first compile in a process is what compiling costs, paid
    once: every later model of the same graph in that process finds the compiled code (a tenth of a second).
    Which training happens to come first is an accident of order, so the report charges compiles to no row and
    sums the first ones per graph and process on their own. ``id`` (host, process, number) names the compile,
    so that the several records built on one model (α-mix's, a search's) count it once."""
    first = signature not in _COMPILED_HERE
    _COMPILED_HERE.add(signature)
    return {
        "graph": signature,
        "compile_s": seconds,
        "first_in_process": first,
        "id": f"{socket.gethostname()}:{os.getpid()}:{next(_COMPILES_HERE)}",
    }


def projected_saving_s(remaining_steps: int, eager_step_s: float, speedup: float) -> float:
    return remaining_steps * eager_step_s * (1 - 1 / speedup)


def compile_pays(saving_s: float, forgone_s: float, compile_s: float) -> bool:
    """The rule: what compiling saves now, with what not compiling this graph already lost, exceeds its cost."""
    return saving_s + forgone_s > compile_s


class CompileCosts:
    """Measured compile seconds and speedups by graph signature: this process's, and a JSON file in the
    cache folder shared by every run (written whole under a lock, so concurrent runs never tear it)."""

    def __init__(self, folder: Optional[Path]):
        self.file = Path(folder) / "compile_costs.json" if folder is not None else None

    def _read(self) -> dict:
        if self.file is None:
            return _NO_FOLDER
        if not self.file.exists():
            return {}
        try:
            costs = json.loads(self.file.read_text())
        except (OSError, ValueError):  # unreadable or torn by hand: the costs are measured again
            return {}
        return costs if isinstance(costs, dict) else {}

    def _entry(self, signature: str) -> dict:
        entry = self._read().get(signature)
        return entry if isinstance(entry, dict) else {}

    def expected(self, signature: str) -> tuple[float, float, float, str]:
        """(compile seconds, speedup, forgone seconds, where the compile estimate came from)."""
        remembered = self._entry(signature)

        def number(name: str, default: float, low: float) -> float:
            value = remembered.get(name)
            return float(value) if isinstance(value, (int, float)) and value >= low else default

        speedup, forgone = number("speedup", ASSUMED_SPEEDUP, 1e-9), number("forgone_s", 0.0, 0.0)
        if signature in _IN_PROCESS:
            return _IN_PROCESS[signature], speedup, forgone, FROM_THIS_PROCESS
        if "compile_s" in remembered and number("compile_s", -1.0, 0.0) >= 0:
            measured = number("compile_s", COLD_COMPILE_S, 0.0)
            if remembered.get("kernels_were_on_disk") is False:  # only a cold compile measured: its kernels are now
                return measured * WARM_FRACTION, speedup, forgone, FROM_CACHE_AFTER_COLD
            return measured, speedup, forgone, FROM_CACHE
        return COLD_COMPILE_S, speedup, forgone, FROM_DEFAULT

    def _update(self, signature: str, forgone_added_s: float = 0.0, **changes) -> None:
        """Sets ``changes`` and adds ``forgone_added_s`` to the graph's forgone seconds, read and written under
        the lock, so concurrent runs sharing the cache add up rather than overwrite one another."""

        def apply(costs: dict) -> None:
            entry = costs.get(signature) if isinstance(costs.get(signature), dict) else {}
            forgone = entry.get("forgone_s")
            forgone = float(forgone) if isinstance(forgone, (int, float)) and forgone >= 0 else 0.0
            entry.update({"forgone_s": forgone + forgone_added_s, **changes})
            costs[signature] = entry

        if self.file is None:
            apply(_NO_FOLDER)
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.file) + ".lock"):
                costs = self._read()
                apply(costs)
                write_file(self.file, json.dumps(costs, indent=1, sort_keys=True) + "\n")
        except OSError:  # a full or read-only cache costs a later decision its measurement, never the training
            pass

    def forgo(self, signature: str, saving_s: float) -> None:
        """A training of ``signature`` stayed eager, forgoing ``saving_s`` it would have saved compiled. A graph
        measured slower compiled projects a negative saving: staying eager lost nothing, so nothing is added."""
        self._update(signature, forgone_added_s=max(0.0, saving_s))

    def remember(
        self,
        signature: str,
        compile_s: float,
        speedup: Optional[float],
        fresh_process: bool,
        kernels_were_on_disk: bool = False,
    ) -> None:
        """A compile of ``signature`` took ``compile_s``; the compiled steps ran ``speedup`` times the eager ones.
        ``kernels_were_on_disk``: a compile of the graph had been measured in this folder when this one began (so
        inductor found its kernels, and this cost is what the next run pays)."""
        # the next training of this graph in this process reuses its compiled code: a reuse's cost, not this one
        _IN_PROCESS[signature] = min(compile_s, REUSE_COMPILE_S) if fresh_process else compile_s
        changes: dict = {"forgone_s": 0.0}
        if fresh_process:  # the cost a next run pays; a reuse inside this process says nothing of it
            changes["kernels_were_on_disk"] = kernels_were_on_disk
            changes["compile_s"] = compile_s
        if speedup is not None:
            changes["speedup"] = speedup
        self._update(signature, **changes)


class CompileDecision:
    """Times a training's first eager steps and says, once, whether compiling the rest pays (the rule above).
    ``details`` says what was measured and decided; it travels into the trained model's stats."""

    def __init__(self, costs: CompileCosts, total_steps: int):
        self.costs, self.total_steps = costs, total_steps
        self.signature: Optional[str] = None
        self.started: Optional[float] = None
        self.eager_step_s: Optional[float] = None
        self.details: dict = {
            "compiled": False,
            "rule": "forgone + remaining steps x eager step x (1 - 1/speedup) > expected compile",
        }

    def after_step(self, steps: int, signature: Callable[[], str]) -> bool:
        """Called after every eager step (``steps`` done so far); True once, when the rest should compile.
        ``signature()`` names the graph, asked for once, when deciding."""
        if steps == WARMUP_STEPS:
            self.started = time.perf_counter()
        if steps != WARMUP_STEPS + PROBE_STEPS or self.started is None:
            return False
        self.signature = signature()
        self.eager_step_s = (time.perf_counter() - self.started) / PROBE_STEPS
        compile_s, speedup, forgone, source = self.costs.expected(self.signature)
        remaining = self.total_steps - steps
        saving = projected_saving_s(remaining, self.eager_step_s, speedup)
        decided = remaining > 0 and compile_pays(saving, forgone, compile_s)
        if not decided:
            self.costs.forgo(self.signature, saving)
        self.details.update(
            {
                "graph": self.signature,
                "eager_step_s": self.eager_step_s,
                "remaining_steps": remaining,
                "projected_saving_s": saving,
                "forgone_s": forgone,
                "expected_compile_s": compile_s,
                "expected_compile_from": source,
                "expected_speedup": speedup,
                "compiled": decided,
            }
        )
        return decided

    def compiled(self, compile_s: float, compiled_steps: int, compiled_train_s: float) -> None:
        """The compile took ``compile_s``; the ``compiled_steps`` after it ran ``compiled_train_s``."""
        speedup = None
        if compiled_steps > 0 and compiled_train_s > 0 and self.eager_step_s:
            speedup = self.eager_step_s / (compiled_train_s / compiled_steps)
        fresh = self.signature not in _IN_PROCESS
        # decided when compiling began, from the costs the decision read: another run sharing the folder may have
        # recorded its own compile of the graph since, which this one's kernels did not come from
        on_disk = self.details.get("expected_compile_from") in (FROM_CACHE, FROM_CACHE_AFTER_COLD)
        self.details.update({"compile_s": compile_s, "measured_speedup": speedup})
        self.costs.remember(self.signature, compile_s, speedup, fresh_process=fresh, kernels_were_on_disk=on_disk)

    def failed(self, error: BaseException) -> None:
        """The compile failed (no C++ toolchain, say): the training goes on eager, and this process does not
        try this graph again (a later run does, in case the machine was mended)."""
        _IN_PROCESS[self.signature] = float("inf")
        self.details.update({"compiled": False, "compile_error": f"{type(error).__name__}: {error}"[:500]})
