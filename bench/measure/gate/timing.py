"""The gate's timing: rounds of the gated benchmarks, base and head in turn, each round a fresh pair of
``worker.py`` processes; the verdicts come from ``verdicts.judge_speed``."""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
from pathlib import Path
from statistics import median
from typing import Optional

from bench.measure.gate.revisions import GateError, Side, log_tail
from bench.measure.gate.verdicts import SpeedVerdict, judge_speed

WORKER = Path(__file__).resolve().parent / "worker.py"
SAMPLE_TIMEOUT_S = 300  # a sample that takes longer means a hung worker, not a slow one


class Worker:
    """One revision's timing worker (``worker.py``), asked for one sample at a time."""

    def __init__(self, side: Side, log_path: Path):
        self.side = side
        self.log = open(log_path, "a", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            cwd=side.root,
            env=side.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.hello: dict = {}

    def wait_ready(self) -> None:
        self.hello = self._read()
        imported = Path(self.hello["transfer_core"]).resolve()
        if self.side.root.resolve() not in imported.parents:
            raise GateError(
                f"the {self.side.name} timing worker imported transfer_core from {imported}, not from the "
                f"{self.side.name} revision's tree {self.side.root}"
            )

    def _read(self) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], SAMPLE_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            why = f"no answer in {SAMPLE_TIMEOUT_S} s" if not ready else f"it exited ({log_tail(Path(self.log.name))})"
            raise GateError(f"the {self.side.name} timing worker failed: {why}")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise GateError(
                f"the {self.side.name} timing worker answered something that is not JSON: {line[:200]!r}"
            ) from None

    def sample(self, name: str) -> dict:
        try:
            self.process.stdin.write(name + "\n")
            self.process.stdin.flush()
        except OSError as e:  # it died between samples
            raise GateError(
                f"the {self.side.name} timing worker is gone ({e.strerror or e}; {log_tail(Path(self.log.name))})"
            ) from None
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.write("\n")
            self.process.stdin.flush()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def time_benchmarks(
    base: Side,
    head: Side,
    rounds: int,
    samples_per_round: int,
    min_effect: float,
    alpha: float,
    scratch: Path,
    only: Optional[list[str]] = None,
) -> tuple[list[SpeedVerdict], list[dict]]:
    """Rounds of every gated benchmark, each with a fresh pair of workers: (verdicts, the raw samples of every
    round).

    A fresh pair per round because a process is a sample too: two processes running identical code differed by up
    to 22% in one benchmark here (where memory lands, how threads are placed), and that difference holds for the
    process's whole life. So each round's ratio is between its own two processes' medians."""
    from tqdm import tqdm

    names: list[str] = []
    units: dict[str, str] = {}
    errors: dict[str, dict[str, str]] = {"base": {}, "head": {}}
    per_round = {side: {} for side in ("base", "head")}  # side -> benchmark -> [median of each round]
    raw = []
    for round_ in tqdm(range(rounds), desc="bench ci: timing", unit="round", disable=None, leave=False):
        order = (base, head) if round_ % 2 == 0 else (head, base)
        workers = {}
        try:
            for side in order:  # both start (and import torch) at once: starting is not timed
                workers[side.name] = Worker(side, scratch / f"{side.name}-worker.log")
            for worker in workers.values():
                worker.wait_ready()
            if not names:  # every benchmark either revision knows, built or not (one neither could build fails)
                hellos = [workers["head"].hello, workers["base"].hello]
                names = list(dict.fromkeys(n for hello in hellos for n in [*hello["benchmarks"], *hello["errors"]]))
                units = {n: next((h["benchmarks"][n] for h in hellos if n in h["benchmarks"]), "s") for n in names}
                names = [n for n in names if not only or n in only]
                if not names:
                    raise GateError(f"no benchmark to time: the workers know {', '.join(units) or 'none'}")
                for side, worker in workers.items():
                    errors[side].update(worker.hello["errors"])
            samples = {side: {name: [] for name in names} for side in workers}
            # the first sample of each benchmark warms a process up (first-call allocations, lazy imports): not kept
            for repeat in range(samples_per_round + 1):
                sides = [s.name for s in (order if repeat % 2 == 0 else order[::-1])]
                for name in names:
                    for side in sides:
                        if name in errors[side]:
                            continue
                        answer = workers[side].sample(name)
                        if "error" in answer:
                            errors[side][name] = answer["error"]
                        elif repeat > 0:
                            samples[side][name].append(answer["value"])
        finally:
            for worker in workers.values():
                worker.close()
        raw.append(samples)
        for side in samples:
            for name, values in samples[side].items():
                if values and name not in errors["base"] and name not in errors["head"]:
                    per_round[side].setdefault(name, []).append(median(values))
    verdicts = []
    for name in names:
        if name in errors["head"]:  # a failed verdict: the head cannot run what the gate times
            verdicts.append(SpeedVerdict(name, units[name], [], [], "failed", note=errors["head"][name]))
        elif name in errors["base"]:  # newer than the base, or the base's API differs: nothing to compare with
            note = f"base cannot run it: {errors['base'][name]}"
            verdicts.append(SpeedVerdict(name, units[name], [], [], "not compared", note=note))
        else:
            base, head = per_round["base"][name], per_round["head"][name]
            verdicts.append(judge_speed(name, units[name], base, head, min_effect, alpha))
    return verdicts, raw
