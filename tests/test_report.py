import pytest

from bench.report import ReportError, load_records, render, summarise


def record(strategy, seed, top1, status="ok", alpha=None, selected=True, val=50.0):
    return {
        "config_hash": f"{strategy}-{seed}", "source": "a", "target": "b", "backbone": "resnet8", "strategy": strategy,
        "seed": seed, "alpha": alpha, "selected": selected, "status": status, "error": None if status == "ok" else "x",
        "metrics": {"test_top1_pct": top1, "val_top1_pct": val} if status == "ok" else {},
        "compute": {"target_total_s": 10.0, "source_train_s_amortised": 2.0, "target_img_per_s": 1000.0},
    }


def test_rows_show_mean_and_std_over_seeds_and_the_selected_alpha():
    records = [
        record("full_finetune", 0, 40.0), record("full_finetune", 1, 42.0),
        record("scratch", 0, 30.0), record("scratch", 1, 0, status="diverged"),
        record("alpha_mix", 0, 35.0, alpha=0.0, selected=False, val=40), record("alpha_mix", 0, 44.0, alpha=0.5, val=60),
    ]
    rows = summarise(records)
    assert [r["strategy"] for r in rows] == ["scratch", "full_finetune", "alpha_mix (α=0.5)"]  # scratch first
    assert rows[1]["test top-1 (%)"] == "41.00 ± 1.41" and rows[1]["seeds"] == "2"
    assert rows[0]["test top-1 (%)"] == "30.00" and rows[0]["seeds"] == "1 (+1 failed: diverged)"
    assert rows[2]["test top-1 (%)"] == "44.00"
    table = render(records)
    assert table.splitlines()[0].startswith("| source → target") and "a → b" in table
    assert render(records, "csv").splitlines()[0].startswith("source → target,backbone,strategy")


def test_a_forced_rerun_supersedes_the_old_record():
    rows = summarise([record("scratch", 0, 30.0), record("scratch", 0, 31.0)])
    assert rows[0]["test top-1 (%)"] == "31.00"


def test_missing_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="no records.jsonl"):
        load_records(tmp_path)
