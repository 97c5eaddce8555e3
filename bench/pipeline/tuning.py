"""Equal-budget tuning: the suite's ``tuning:`` section gives every strategy that trains the same number of
trials, drawn from its search space, each a fitted model chosen among on the target's validation split.

A search space maps a setting (a recipe key or an option of the strategy) to a list of values (a choice)
or to ``{log: [low, high]}`` / ``{uniform: [low, high]}`` (a range). Each strategy declares its default
space (``Strategy.search_space``, from the literature; ``docs/strategies.md`` names the papers), and
``tuning.space.NAME`` replaces it setting by setting. ``search: random`` draws ``trials`` distinct
points by Latin hypercube sampling (scipy's ``qmc.LatinHypercube``): each setting's range, cut into
``trials`` equal parts (on a log scale for ``log``), gets one point in each part, so a budget of three
trials covers the low, middle and high third of every range instead of risking three draws in one (plain
random draws of three learning rates over 1e-4..0.1 landed all below 0.002 for one strategy and not for
another: unequal budgets in effect). Draws are seeded by ``tuning.seed`` and the strategy's name, so every
seed of a suite tries the same points and a rerun draws them again. ``search: grid`` takes the product of
lists, which must have exactly ``trials`` points, so that no method gets more tries than another.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from bench.errors import SuiteError
from transfer_core.cache import content_key

SIGNIFICANT_DIGITS = 3  # drawn values are rounded: labels stay short and a point reads the same everywhere


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool

    def at(self, share: float) -> float:
        """The value ``share`` (0-1) of the way from low to high, on the range's scale."""
        if self.log:
            value = math.exp(math.log(self.low) + share * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + share * (self.high - self.low)
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


@dataclass(frozen=True)
class Tuning:
    trials: int = 0  # per strategy that trains; 0: no search (refit alone may still be asked)
    # random: Latin hypercube sampling of each range, seeded by ``seed`` and the strategy's name; grid: the
    # product of the space's lists, which must have exactly ``trials`` points
    search: Literal["random", "grid"] = "random"
    seed: int = 0  # seeds the random search
    refit: bool = False  # retrain the selected point on train + validation before the test evaluation
    space: dict = field(default_factory=dict)  # strategy -> {setting: values or range}, over the defaults


def parse_dimension(value: Any, where: str):
    """A list of values, or ``{log: [low, high]}`` / ``{uniform: [low, high]}``."""
    if isinstance(value, list):
        if not value or len(set(map(repr, value))) != len(value):
            raise SuiteError(f"{where}: expected a non-empty list of different values, got {value!r}")
        return tuple(value)
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("log", "uniform"):
        kind, bounds = next(iter(value.items()))
        ok = isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)
        if not ok or not bounds[0] < bounds[1] or (kind == "log" and bounds[0] <= 0):
            raise SuiteError(
                f"{where}.{kind}: expected [low, high] with low < high" + (" and low > 0" if kind == "log" else "")
            )
        return Range(float(bounds[0]), float(bounds[1]), kind == "log")
    raise SuiteError(f"{where}: expected a list of values or {{log: [low, high]}} / {{uniform: [low, high]}}")


def space_of(name: str, default: dict, override: Optional[dict], where: str) -> dict:
    """The strategy's space: its declared defaults, each setting replaced where the suite gives one."""
    space = {key: parse_dimension(value, f"{where}.{key}") for key, value in default.items()}
    for key, value in (override or {}).items():
        space[key] = parse_dimension(value, f"{where}.{key}")
    if not space:
        raise SuiteError(f"{where}: {name} declares no search space; give one (e.g. {{lr: {{log: [0.001, 0.1]}}}})")
    return space


def trial_points(name: str, space: dict, tuning: Tuning, where: str) -> list[dict]:
    """The ``tuning.trials`` points ``name`` is trained at, in a fixed order."""
    keys = list(space)
    if tuning.search == "grid":
        ranges = [k for k in keys if isinstance(space[k], Range)]
        if ranges:
            raise SuiteError(f"{where}.{ranges[0]}: search: grid takes lists of values, not ranges")
        points = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
        if len(points) != tuning.trials:
            raise SuiteError(
                f"{where}: its grid has {len(points)} points and tuning.trials is {tuning.trials}; every strategy "
                "gets the same number of trials: make the grid that size, or use search: random"
            )
        return points
    combinations = math.prod(len(space[k]) for k in keys if not isinstance(space[k], Range))
    if all(not isinstance(space[k], Range) for k in keys) and combinations < tuning.trials:
        raise SuiteError(
            f"{where}: its space has {combinations} distinct points, fewer than tuning.trials ({tuning.trials})"
        )
    from scipy.stats import qmc

    rng = np.random.default_rng(int(content_key({"seed": tuning.seed, "strategy": name})[:8], 16))
    for _ in range(100):  # a draw with a repeated point (choices can coincide) is drawn again
        shares = qmc.LatinHypercube(d=len(keys), rng=rng).random(tuning.trials)
        points = [
            {k: space[k].at(s) if isinstance(space[k], Range) else _pick(space[k], s) for k, s in zip(keys, row)}
            for row in shares
        ]
        if len({repr(p) for p in points}) == len(points):
            return points
    raise SuiteError(f"{where}: could not draw {tuning.trials} distinct points from its space; widen it")


def _pick(values: tuple, share: float):
    """The choice ``share`` (0-1) of the way through the list: a stratum of the hypercube, one value."""
    value = values[min(int(share * len(values)), len(values) - 1)]
    return value.item() if hasattr(value, "item") else value
