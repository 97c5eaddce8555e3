"""A new strategy is one file: dropped into the strategies package it is registered, and a strategy defined
only here runs through a suite and is ordered, compared and drawn by its own metadata, with no other edit."""

import sys
import textwrap

import pytest
from conftest import tiny_suite

import transfer_core.strategies as strategies
from bench.pipeline.runner import Runner
from bench.pipeline.suite import expand_cells, parse_suite
from bench.results.records import strategy_info
from bench.results.report import summarise_rows
from transfer_core.runtime import resolve_runtime
from transfer_core.strategies import STRATEGIES, register_strategy
from transfer_core.strategies.scratch import Scratch


@pytest.fixture
def registry(monkeypatch):
    """The strategy registry, restored after the test: what a test registers does not outlive it."""
    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))
    return STRATEGIES


def test_a_module_in_the_package_folder_is_discovered(registry, tmp_path, monkeypatch):
    (tmp_path / "short_scratch.py").write_text(
        textwrap.dedent("""
        from transfer_core.strategies.base import register_strategy
        from transfer_core.strategies.scratch import Scratch

        @register_strategy("short_scratch")
        class ShortScratch(Scratch):
            baseline = False
            table_order = 5
    """)
    )
    monkeypatch.setattr(strategies, "__path__", [*strategies.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "transfer_core.strategies.short_scratch", raising=False)
    assert "short_scratch" not in registry
    strategies.discover()
    assert "short_scratch" in registry and registry.get("short_scratch").table_order == 5
    sys.modules.pop("transfer_core.strategies.short_scratch", None)


def test_a_strategy_defined_here_runs_and_is_shown_by_its_own_metadata(registry, tmp_path):
    @register_strategy("scratch_twice")
    class ScratchTwice(Scratch):  # noqa: F841  (registered by the decorator)
        """Scratch with its own identity: shown between scratch and the probe, with a star."""

        baseline = False
        table_order = 5
        plot_marker = "*"

    raw = tiny_suite(
        strategies={"linear_probe": {"epochs": 2}, "scratch_twice": {"epochs": 1}, "scratch": {"epochs": 1}}
    )
    suite = parse_suite(raw)
    runner = Runner(
        suite, tmp_path / "data", tmp_path / "out", tmp_path / "cache", resolve_runtime("cpu"), log=lambda m: None
    )
    summary = runner.run(expand_cells(suite))
    assert summary.ran == 3 and not summary.failed
    records = runner.store.read()
    mine = next(r for r in records if r["strategy"] == "scratch_twice")
    assert mine["strategy_info"] == {"baseline": False, "table_order": 5, "plot_marker": "*", "ingredients": []}

    rows = summarise_rows(records)
    assert [row.strategy for row in rows] == ["scratch", "scratch_twice", "linear_probe"]
    twice = rows[1]
    assert twice.marker == "*" and not twice.baseline
    assert twice.delta_vs_scratch is not None  # measured against the baseline the strategies declare: scratch


def test_records_carry_what_the_report_needs_and_old_records_find_it_in_the_registry():
    new = {
        "strategy": "lp_ft",
        "strategy_info": {"baseline": False, "table_order": 7, "plot_marker": "v", "ingredients": ["linear_probe"]},
    }
    old = {"strategy": "scratch"}  # written before records carried it
    unknown = {"strategy": "gone"}  # a strategy no longer in the registry
    info = strategy_info([new, old, unknown])
    assert info["lp_ft"]["table_order"] == 7
    assert info["scratch"]["baseline"] and info["scratch"]["plot_marker"] == "o"
    assert info["gone"]["table_order"] == 100 and not info["gone"]["baseline"]
