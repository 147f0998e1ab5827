import pytest

from pipeline.errors import UsageError
from pipeline.files import write_json
from pipeline.results.report import (
    README_END,
    README_START,
    collect_runs,
    render_markdown,
    render_winners,
    summarize,
    winners,
    write_report,
)


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
    text = write_report(tmp_path / "runs", tmp_path / "reports" / "report.md")
    assert "80.00 ± 0.00" in text and (tmp_path / "reports" / "report.md").read_text() == text


def test_report_lists_exported_runs_with_their_figures(tmp_path):
    write_json(tmp_path / "runs" / "a-scratch" / "metrics.json", run("a", 0, 0, 0.8))
    write_json(tmp_path / "runs" / "a-scratch" / "export" / "export.json", {
        "files": {"onnx": {"bytes": 2048}, "int8": {"bytes": 512}}, "int8_size_ratio": 0.25,
        "test_acc": {"eager": 0.8, "onnx": 0.8, "int8": 0.795},
        "latency_us_batch1_1thread": {"eager": 100.0, "onnx": 40.0, "int8": 30.0}})
    text = write_report(tmp_path / "runs", tmp_path / "report.md")
    assert "| a-scratch | 2.0 | 0.5 | 0.250 | 80.00 → 79.50 | 100 | — | 40 | 30 |" in text


def seeded(student, alpha, accs, T=4.0):
    return [dict(run(student, alpha, seed, acc, T), ece=0.02 + alpha / 100,
                 reliability={"ece": 0.02, "bins": 2, "confidence": [0.4, 0.9], "accuracy": [0.5, 0.85],
                              "count": [10, 90]}) for seed, acc in enumerate(accs)]


def test_winner_is_named_with_its_margin_and_whether_it_beats_the_seed_spread():
    rows = summarize(seeded("a", 0, [0.80, 0.81, 0.80]) + seeded("a", 0.5, [0.83, 0.84, 0.83])
                     + seeded("a", 0.9, [0.82, 0.82, 0.82], T=2.0) + seeded("b", 0, [0.7, 0.71])
                     + seeded("b", 0.5, [0.69, 0.72]))
    by_student = {w["student"]: w for w in winners(rows)}
    a, b = by_student["a"], by_student["b"]
    assert a["arm"] == "KD T=4 ALPHA=0.5" and a["over_scratch"] == pytest.approx(3.0)
    assert a["runner_up"] == "KD T=2 ALPHA=0.9" and a["over_runner_up"] == pytest.approx(4 / 3)
    assert a["beyond_noise"]
    assert b["arm"] == "scratch" and b["over_scratch"] is None
    text = render_winners(rows)
    assert "| a | 5 | clean | KD T=4 ALPHA=0.5 | 83.33 ± 0.58 | +3.00 | +1.33 (KD T=2 ALPHA=0.9) | yes |" in text


def test_report_draws_its_figures_and_refreshes_only_the_readme_block(tmp_path):
    for r in seeded("a", 0, [0.80, 0.81]) + seeded("a", 0.5, [0.83, 0.84]) + seeded("a", 0.5, [0.82, 0.8], T=2.0):
        arm = "scratch" if r["alpha"] == 0 else f"T{r['T']:g}-a0.5"
        name = f"a-{arm}-s{r['seed']}-e5"
        write_json(tmp_path / "runs" / name / "metrics.json", r)
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{README_START}\nold table\n{README_END}\n\n## after\n")
    text = write_report(tmp_path / "runs", tmp_path / "reports" / "report.md", readme=readme)
    for png in ("scratch_vs_distilled.png", "acc_vs_T.png", "acc_vs_params.png", "agreement.png", "calibration.png"):
        assert (tmp_path / "reports" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    new = readme.read_text()
    assert new.startswith("# intro\n\n") and new.endswith(f"{README_END}\n\n## after\n") and "old table" not in new
    assert "| a | 5 | clean | KD T=4 ALPHA=0.5 |" in new
    assert (tmp_path / "results" / "calibration.png").is_file() and "](results/calibration.png)" in new


def test_readme_without_markers_is_refused(tmp_path):
    write_json(tmp_path / "runs" / "a-scratch" / "metrics.json", run("a", 0, 0, 0.8))
    (tmp_path / "README.md").write_text("# no block here\n")
    with pytest.raises(UsageError, match="no results block"):
        write_report(tmp_path / "runs", tmp_path / "report.md", readme=tmp_path / "README.md")
    assert (tmp_path / "README.md").read_text() == "# no block here\n"


def test_the_results_say_why_the_full_label_gain_is_small_and_where_the_cache_pays():
    from pipeline.results.report import results_section

    few = [dict(run("cnn-tiny", a, 0, acc), labels=1200) for a, acc in ((0, 0.70), (0.5, 0.86))]
    rows = summarize([run("cnn-tiny", 0, 0, 0.90), run("cnn-tiny", 0.5, 0, 0.901), *few])
    text = results_section(rows)
    assert "With every label, the teacher (92.00%) is 2.00 pp above the best scratch student" in text
    assert "the cache is what cnn-tiny learns from: +16.00 pp over scratch on the same labels" in text
