"""experiment-patient: every arm at every length, the figure and the costs, and a cache without a mixup bank."""

from __future__ import annotations

import pytest

from pipeline.config import LogitsConfig, PatientExperimentConfig, StudentConfig
from pipeline.errors import UsageError
from pipeline.experiments.patient import ARMS, plan_runs, run_patient_experiment
from pipeline.teacher.logits_pass import write_teacher_logits


def _config(tmp_path, prepared, cache, **kw) -> PatientExperimentConfig:
    student = StudentConfig(cache=cache, dataset=prepared, out_dir=tmp_path / "runs", batch_size=16)
    return PatientExperimentConfig(student=student, runs_dir=tmp_path / "runs", tuning_dir=tmp_path / "tuning",
                                   reports_dir=tmp_path / "reports", students=("mlp",), seeds=(0, 1),
                                   Ts=(1.0, 4.0), alphas=(0.5,), holdout=24, **kw)


def test_every_arm_at_every_length_with_costs_and_a_figure(tmp_path, prepared, teacher_dir):
    bank = tmp_path / "bank.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=bank, device="cpu",
                                      views=2, mixup=1.0), progress=False)
    cfg = _config(tmp_path, prepared, bank, lengths=(1, 3))
    record = run_patient_experiment(cfg)
    assert {(r["arm"], r["epochs"]) for r in record["arms"]} == {(a, e) for a in ARMS for e in (1, 3)}
    matching = [r for r in record["arms"] if r["arm"] == "matching"]
    assert all(r["alpha"] == 1.0 and r["T"] == 1.0 and r["seeds"] == [0, 1] for r in matching)
    assert all(r["cpu_hours"] > 0 for r in record["arms"])
    # every final run is kept in a few numbers, so another session's seeds can be pooled with these
    assert sorted((r["arm"], r["epochs"], r["seed"]) for r in record["runs"]) == sorted(
        (a, e, s) for a in ARMS for e in (1, 3) for s in (0, 1))
    # online KD pays one teacher forward per image seen on top of the same student work
    assert all(r["online_cpu_hours"] > r["cpu_hours"] for r in record["arms"] if r["arm"] != "scratch")
    text = (tmp_path / "reports" / "patient-experiment.md").read_text()
    assert "| mlp | 3 | matching |" in text and (tmp_path / "reports" / "patient-experiment.png").stat().st_size
    names = [c.out_dir.name.removesuffix("-on-tiny") for c in plan_runs(cfg, {"mlp": {"T": 4.0, "alpha": 0.5}}, 2)]
    assert {"mlp-T1-a1-r2-s0-e3", "mlp-T4-a0.5-aug-s1-e1", "mlp-scratch-aug-s0-e3"} <= set(names)
    assert names.index("mlp-scratch-aug-s0-e1") < names.index("mlp-scratch-aug-s0-e3")   # short curves first


def test_function_matching_needs_a_mixup_bank(tmp_path, prepared, cache_file):
    with pytest.raises(UsageError, match="no mixup view bank"):
        run_patient_experiment(_config(tmp_path, prepared, cache_file, lengths=(1,)))
    with pytest.raises(UsageError, match="LENGTHS lists"):
        _config(tmp_path, prepared, cache_file, lengths=(2, 2))


def test_banks_match_each_bank_size_at_the_longest_length_and_report_the_fresh_gap(tmp_path, prepared, teacher_dir):
    bank = tmp_path / "bank5.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=bank, device="cpu",
                                      views=5, mixup=1.0), progress=False)
    cfg = _config(tmp_path, prepared, bank, lengths=(1, 2), banks=(1, 3))
    record = run_patient_experiment(cfg)
    # the curves' matching arm replays the largest bank, not the fresh views past it
    matching = [r for r in record["arms"] if r["arm"] == "matching"]
    assert {r["epochs"] for r in matching} == {1, 2} and all(r["seeds"] == [0, 1] for r in matching)
    banks = {r["views"]: r for r in record["banks"]}
    assert set(banks) == {1, 3}
    for k, row in banks.items():
        assert row["fresh_views"] == 5 - k and row["seeds"] == [0, 1]
        mean, _ = row["agreement_gap"]
        assert mean == pytest.approx(row["bank_agreement"][0] - row["fresh_agreement"][0])
    runs = {c.out_dir.name.removesuffix("-on-tiny") for c in plan_runs(cfg, {"mlp": {"T": 1.0, "alpha": 0.5}}, 3)}
    assert {"mlp-T1-a1-r3-s0-e1", "mlp-T1-a1-r3-s1-e2", "mlp-T1-a1-r1-s0-e2"} <= runs
    assert "mlp-T1-a1-r1-s0-e1" not in runs                # other banks only at the longest length
    text = (tmp_path / "reports" / "patient-experiment.md").read_text()
    assert "Bank size against overfitting (function matching, 2 epochs)" in text and "| mlp | 1 | 2 |" in text


def test_banks_need_fresh_views_beyond_the_largest(tmp_path, prepared, teacher_dir):
    bank = tmp_path / "bank3.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=bank, device="cpu",
                                      views=3, mixup=1.0), progress=False)
    with pytest.raises(UsageError, match="a bank of 3 leaves no fresh view.*VIEWS=7"):
        run_patient_experiment(_config(tmp_path, prepared, bank, lengths=(1,), banks=(2, 3)))
    with pytest.raises(UsageError, match=r"BANKS: VIEWS must be a whole number in \[1, 1024\]"):
        _config(tmp_path, prepared, bank, lengths=(1,), banks=(0,))
