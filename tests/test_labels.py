"""Few labels (LABELS=N): the labelled subset, the row-weighted loss, the runs, and experiment-labels."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.config import LabelsExperimentConfig, LogitsConfig, StudentConfig
from pipeline.data.label_subsets import labelled_rows
from pipeline.data.prepare import Dataset, load_prepared, save_prepared
from pipeline.errors import UsageError
from pipeline.experiments.labels import run_labels_experiment, scratch_epochs
from pipeline.losses import kd_loss_from_log_targets
from pipeline.results.report import collect_runs, summarize
from pipeline.student.distill import train_student
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.training.run_dir import MODEL_FILE


def test_the_labelled_subset_is_balanced_seeded_and_inside_the_rows():
    y = np.repeat(np.arange(4), 50)
    rows = np.arange(20, 200)                    # rows 0..19 held out: never labelled
    a = labelled_rows(y, rows, 22, seed=0, num_classes=4)
    assert len(a) == 22 and len(set(a)) == 22 and a.min() >= 20 and np.all(np.diff(a) > 0)
    assert sorted(np.bincount(y[a], minlength=4)) == [5, 5, 6, 6]      # 22 = 4 * 5 + 2
    assert np.array_equal(a, labelled_rows(y, rows, 22, seed=0, num_classes=4))
    assert not np.array_equal(a, labelled_rows(y, rows, 22, seed=1, num_classes=4))


def test_a_subset_that_cannot_be_drawn_is_refused():
    y = np.array([0] * 30 + [1] * 2)
    with pytest.raises(UsageError, match="LABELS=33 but the run trains on 32 rows"):
        labelled_rows(y, np.arange(32), 33, 0, 2)
    with pytest.raises(UsageError, match="needs 5 rows of class 1 .* hold 2"):
        labelled_rows(y, np.arange(32), 10, 0, 2)


def test_the_loss_weighs_labelled_and_unlabelled_rows_apart():
    torch.manual_seed(0)
    z_s, z_t = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    targets = torch.log_softmax(z_t / 2, dim=1)
    everyone = torch.ones(6, dtype=torch.bool)
    full = kd_loss_from_log_targets(z_s, targets, y, T=2, alpha=0.3)
    assert torch.allclose(kd_loss_from_log_targets(z_s, targets, y, T=2, alpha=0.3, labelled=everyone), full)
    nobody = torch.zeros(6, dtype=torch.bool)
    soft = kd_loss_from_log_targets(z_s, targets, y, T=2, alpha=1.0)
    assert torch.allclose(kd_loss_from_log_targets(z_s, targets, y, T=2, alpha=0.3, labelled=nobody), soft)
    # an unlabelled row's label cannot move the loss
    some = torch.tensor([True, False, True, False, True, False])
    other = y.clone()
    other[~some] = (other[~some] + 1) % 5
    assert torch.equal(kd_loss_from_log_targets(z_s, targets, y, T=2, alpha=0.3, labelled=some),
                       kd_loss_from_log_targets(z_s, targets, other, T=2, alpha=0.3, labelled=some))


def _subset_dataset(d: Dataset, rows: np.ndarray) -> Dataset:
    return Dataset(d.name, d.x_train[rows], d.y_train[rows], d.x_test, d.y_test, d.class_names)


def test_scratch_on_n_labels_is_scratch_on_those_rows_alone(tmp_path, prepared, cache_file, teacher_dir,
                                                             monkeypatch):
    """The honest baseline: with LABELS=N, scratch trains exactly as on a dataset of the N rows (whose
    input normalisation is set to the whole set's: image statistics need no labels)."""
    few = train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "few", student="mlp",
                                      alpha=0, labels=30, epochs=3, batch_size=8), progress=False)
    d = load_prepared(prepared)
    rows = labelled_rows(d.y_train, np.arange(len(d.y_train)), 30, 0, d.num_classes)
    assert few["labels"] == 30 and few["labels_per_class"] == [10, 10, 10]
    small = tmp_path / "small" / "tiny.npz"
    save_prepared(_subset_dataset(d, rows), small)
    whole = d.normalization()
    monkeypatch.setattr(Dataset, "normalization", lambda self: whole)
    small_cache = tmp_path / "small.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=small, out=small_cache,
                                      device="cpu"), progress=False)
    alone = train_student(StudentConfig(cache=small_cache, dataset=small, out_dir=tmp_path / "alone", student="mlp",
                                        alpha=0, epochs=3, batch_size=8), progress=False)
    a = torch.load(tmp_path / "few" / MODEL_FILE, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "alone" / MODEL_FILE, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a) and few["test_acc"] == alone["test_acc"]


def test_distilled_runs_keep_n_labels_and_soft_targets_everywhere(tmp_path, prepared, cache_file):
    kw = dict(cache=cache_file, dataset=prepared, student="mlp", T=2.0, epochs=2, batch_size=16)
    soft_only = train_student(StudentConfig(out_dir=tmp_path / "a", alpha=1, **kw), progress=False)
    no_labels = train_student(StudentConfig(out_dir=tmp_path / "b", alpha=1, labels=0, **kw), progress=False)
    a = torch.load(tmp_path / "a" / MODEL_FILE, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / MODEL_FILE, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "ALPHA=1 ignores labels, so LABELS=0 must change nothing"
    assert no_labels["labels"] == 0 and soft_only["labels"] is None
    cfg = StudentConfig(out_dir=tmp_path / "c", alpha=0.5, labels=12, **kw)
    assert "-l12-" in cfg.run_name
    few = train_student(cfg, progress=False)
    full = train_student(StudentConfig(out_dir=tmp_path / "d", alpha=0.5, **kw), progress=False)
    assert few["labels"] == 12 and few["labelled_rows_digest"] and few["test_acc"] != full["test_acc"]
    with pytest.raises(UsageError, match="LABELS=0 leaves no hard labels"):
        StudentConfig(out_dir=tmp_path / "e", alpha=0.5, labels=0, **kw)


def test_the_cli_takes_labels_and_refuses_bad_counts(tmp_path, prepared, cache_file):
    base = [sys.executable, "-m", "stages.cli", "student", "--cache", str(cache_file), "--dataset", str(prepared),
            "--out-dir", str(tmp_path / "r"), "--epochs", "1", "--alpha", "0.5"]
    for bad, message in (("1000", "LABELS=1000 but the run trains on 96 rows"), ("x", "LABELS must be"),
                         ("95", "for a balanced subset, but the training rows hold")):
        proc = subprocess.run(base + ["--labels", bad], capture_output=True, text=True, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr and not (tmp_path / "r" / "metrics.json").exists()
    proc = subprocess.run(base + ["--labels", "all"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and json.loads((tmp_path / "r" / "metrics.json").read_text())["labels"] is None


def test_scratch_is_tried_at_the_epochs_and_at_the_steps_of_the_distilled_arm():
    assert scratch_epochs(10, None, 60000) == [10]
    assert scratch_epochs(10, 600, 60000) == [10, 100, 1000]
    assert scratch_epochs(10, 6000, 60000) == [10, 32, 100]


def test_experiment_labels_runs_both_arms_and_writes_its_table(tmp_path, prepared, cache_file):
    student = StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "runs", epochs=1, batch_size=16)
    cfg = LabelsExperimentConfig(student=student, runs_dir=tmp_path / "runs", tuning_dir=tmp_path / "tuning",
                                 reports_dir=tmp_path / "reports", students=("mlp",), label_counts=(0, 12, None),
                                 Ts=(1.0, 4.0), alphas=(0.5,), seeds=(0, 1), holdout=24)
    record = run_labels_experiment(cfg)
    arms = {(r["labels"], r["arm"]) for r in record["arms"]}
    assert arms == {(0, "distilled"), (12, "scratch"), (12, "scratch, tuned epochs"), (12, "distilled"),
                    (96, "scratch"), (96, "scratch, tuned epochs"), (96, "distilled")}
    assert all(r["seeds"] == [0, 1] for r in record["arms"])
    zero = next(r for r in record["arms"] if r["labels"] == 0)
    assert zero["alpha"] == 1.0                                    # no labels: soft targets alone
    tuned = next(r for r in record["arms"] if r["labels"] == 12 and r["arm"] == "scratch, tuned epochs")
    assert tuned["epochs"] in scratch_epochs(1, 12, 96)
    text = (tmp_path / "reports" / "labels-experiment.md").read_text()
    assert "| mlp | 12 | distilled |" in text and (tmp_path / "reports" / "labels-experiment.png").stat().st_size
    # the report tells runs on 12 labels from full-label ones, and compares each with scratch on as many labels
    rows = summarize(collect_runs(tmp_path / "runs"))
    few = [r for r in rows if "12 labels" in r["arm"]]
    assert any(r["arm"].startswith("scratch") for r in few) and any(r["arm"].startswith("KD") for r in few)
    assert all(r["delta"] is not None for r in few if r["arm"].startswith("KD"))
    # killed and run again: every finished run is kept, nothing retrains
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.json")}
    run_labels_experiment(cfg)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.json")} == before
