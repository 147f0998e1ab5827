import pytest

from pipeline.files import write_json
from pipeline.report import collect_runs, render_markdown, summarize, write_report


def run(student, alpha, seed, acc, T=4.0):
    return {"student": student, "alpha": alpha, "T": T, "seed": seed, "epochs": 5, "test_acc": acc,
            "params": 1000, "agreement_with_teacher": 0.9, "seconds_per_epoch": 1.0, "teacher_test_acc": 0.92}


def test_groups_seeds_and_compares_with_scratch_at_the_same_epochs():
    rows = summarize([run("a", 0, 0, 0.80), run("a", 0, 1, 0.82), run("a", 0.9, 0, 0.83), run("a", 0.9, 1, 0.85)])
    scratch, kd = rows
    assert scratch["arm"] == "scratch" and scratch["acc"] == pytest.approx(81.0)
    assert scratch["acc_std"] == pytest.approx(1.4142, rel=1e-3)
    assert kd["delta"] == pytest.approx(3.0) and kd["seeds"] == [0, 1]
    assert "+3.00" in render_markdown(rows)


def test_report_reads_finished_runs_only(tmp_path):
    write_json(tmp_path / "runs" / "a-scratch" / "metrics.json", run("a", 0, 0, 0.8))
    write_json(tmp_path / "runs" / ".a-tmp-123" / "metrics.json", run("a", 0, 1, 0.1))
    assert [r["run"] for r in collect_runs(tmp_path / "runs")] == ["a-scratch"]
    text = write_report(tmp_path / "runs", tmp_path / "reports" / "results.md")
    assert "80.00 ± 0.00" in text and (tmp_path / "reports" / "results.md").read_text() == text


def test_report_lists_exported_runs_with_their_figures(tmp_path):
    write_json(tmp_path / "runs" / "a-scratch" / "metrics.json", run("a", 0, 0, 0.8))
    write_json(tmp_path / "runs" / "a-scratch" / "export" / "export.json", {
        "files": {"onnx": {"bytes": 2048}, "int8": {"bytes": 512}}, "int8_size_ratio": 0.25,
        "test_acc": {"eager": 0.8, "onnx": 0.8, "int8": 0.795},
        "latency_us_batch1_1thread": {"eager": 100.0, "onnx": 40.0, "int8": 30.0}})
    text = write_report(tmp_path / "runs", tmp_path / "results.md")
    assert "| a-scratch | 2.0 | 0.5 | 0.250 | 80.00 → 79.50 | 100 | — | 40 | 30 |" in text
