"""The gate trials' injected faults still apply to the code they patch (each anchor found exactly once)."""

import importlib.util

from conftest import REPO


def test_every_fault_of_the_gate_trials_applies_to_the_code_as_it_is():
    spec = importlib.util.spec_from_file_location("gate_trials", REPO / "scripts" / "gate_trials.py")
    trials = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trials)
    assert {"none", "slow20", "top1-1pt", "top1-2pt", "numerics"} <= set(trials.FAULTS)
    for fault, edits in trials.FAULTS.items():
        for relative, anchor, replacement in edits:
            text = (REPO / relative).read_text()
            assert text.count(anchor) == 1, f"{fault}: {anchor!r} occurs {text.count(anchor)} times in {relative}"
            assert replacement != anchor
