"""The results contract: every number a record carries is declared once in ``bench/results/fields.py``, with the
direction ``bench compare`` gates by, and docs/results.md's field table is that list."""

from conftest import REPO

from bench.results.fields import BY_NAME, DIRECTIONS, FIELDS, markdown_table


def test_the_results_manual_holds_the_declared_fields_table():
    assert markdown_table() in (REPO / "docs" / "results.md").read_text(encoding="utf-8"), (
        "docs/results.md's metrics and compute table differs from bench/results/fields.py: "
        "paste `python -m bench list fields`"
    )


def test_every_field_is_declared_once_with_a_direction_a_number_can_have():
    assert len(BY_NAME) == len(FIELDS)
    assert all(f.direction in ("higher", "lower", None) and f.meaning for f in FIELDS)
    assert DIRECTIONS["test_top1_pct"] == "higher" and DIRECTIONS["target_total_s"] == "lower"
    assert "target_compiled_steps" not in DIRECTIONS  # a description, not something to gate on


def test_a_run_writes_no_number_the_contract_lacks(tmp_path):
    from conftest import tiny_suite
    from test_runner import make_runner

    runner, cells = make_runner(tmp_path, tiny_suite())
    runner.run(cells)
    records = runner.store.read()
    assert records
    for record in records:
        for section in ("metrics", "compute"):
            undeclared = {name for name in record[section] if BY_NAME.get(name, None) is None}
            assert not undeclared, f"{section} fields missing from bench/results/fields.py: {sorted(undeclared)}"
            assert all(BY_NAME[name].section == section for name in record[section])
        assert record["directions"] == DIRECTIONS
