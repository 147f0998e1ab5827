"""Resumable student runs: a killed run, started again with the same command, ends with the same weights."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import make_dataset

from pipeline.config import StudentConfig
from pipeline.data.prepare import save_prepared
from pipeline.errors import UsageError
from pipeline.student.distill import train_student
from pipeline.training.loop import Trainer
from pipeline.training.resume import resume_dir
from pipeline.training.run_dir import MODEL_FILE


def _weights(run_dir):
    return torch.load(run_dir / MODEL_FILE, weights_only=True)["state_dict"]


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _killed_in_epoch(epoch: int, train, monkeypatch) -> None:
    """Run ``train()`` with its ``epoch``-th epoch interrupted: what a kill then leaves is the state saved
    after the epoch before."""
    real, calls = Trainer.train_epoch, []

    def dies(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(Trainer, "train_epoch", real)


@pytest.mark.parametrize("student", ["cnn-tiny", "timm:mobilenetv3_small_050"])    # softcache's own, and timm's
def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, prepared, cache_file, monkeypatch, student):
    kw = dict(cache=cache_file, dataset=prepared, student=student, epochs=4, batch_size=16, alpha=0.5,
              augment=True, labels=30, threads=1)
    whole = train_student(StudentConfig(out_dir=tmp_path / "whole", **kw), progress=False)
    cfg = StudentConfig(out_dir=tmp_path / "killed", **kw)
    _killed_in_epoch(3, lambda: train_student(cfg, progress=False), monkeypatch)
    assert not cfg.out_dir.exists() and (resume_dir(cfg.out_dir) / "state.pt").is_file()
    resumed = train_student(cfg, progress=False)
    assert resumed["resumed_from_epoch"] == 2 and whole["resumed_from_epoch"] == 0
    assert _same(_weights(tmp_path / "whole"), _weights(cfg.out_dir))
    assert resumed["test_acc"] == whole["test_acc"] and len(resumed["history"]) == 4
    assert not resume_dir(cfg.out_dir).exists()


def test_a_state_from_another_cache_or_recipe_is_refused_and_kept(tmp_path, prepared, cache_file, monkeypatch):
    cfg = StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "r", student="mlp", epochs=3,
                        batch_size=16)
    _killed_in_epoch(2, lambda: train_student(cfg, progress=False), monkeypatch)
    state = resume_dir(cfg.out_dir) / "state.pt"
    saved = state.read_bytes()
    other = StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "r", student="mlp", epochs=3,
                          batch_size=16, lr=1e-3)            # same directory, another recipe
    with pytest.raises(UsageError, match=r"another recipe \(lr\).*rm -r"):
        train_student(other, progress=False)
    assert state.read_bytes() == saved and not cfg.out_dir.exists()


def test_checkpoint_every_sets_the_cadence(tmp_path, prepared, cache_file, monkeypatch):
    saves = []
    from pipeline.training.resume import TrainingState
    real = TrainingState.save
    monkeypatch.setattr(TrainingState, "save", lambda self, *a, **k: (saves.append(1), real(self, *a, **k)))
    train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "a", student="mlp",
                                epochs=7, batch_size=32, checkpoint_every=3), progress=False)
    assert len(saves) == 2                                  # after epochs 3 and 6, never after the last
    saves.clear()
    train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "b", student="mlp",
                                epochs=3, batch_size=32, checkpoint_every=0), progress=False)
    assert saves == []


@pytest.mark.slow
def test_ten_kills_at_random_instants_all_resume_to_the_same_weights(tmp_path, teacher_dir):
    """kill -9 anywhere in a student run (an epoch, a save, the final rename), then the same command:
    10 of 10 end with weights torch.equal to the uninterrupted run."""
    from pipeline.config import LogitsConfig
    from pipeline.teacher.logits_pass import write_teacher_logits

    prepared = tmp_path / "d" / "tiny.npz"
    save_prepared(make_dataset(n_train=3000, n_test=200), prepared)
    cache = tmp_path / "c.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=cache,
                                      device="cpu"), progress=False)
    base = ["--cache", str(cache), "--dataset", str(prepared), "--student", "cnn-tiny", "--epochs", "6",
            "--batch-size", "32", "--alpha", "0.5", "--augment", "--threads", "1"]
    argv = lambda out: [sys.executable, "-m", "stages.cli", "student", "--out-dir", str(out), *base]  # noqa: E731
    assert subprocess.run(argv(tmp_path / "whole"), capture_output=True, check=False).returncode == 0
    whole = _weights(tmp_path / "whole")
    epoch_seconds = json.loads((tmp_path / "whole" / "metrics.json").read_text())["seconds_per_epoch"]
    rng = random.Random(0)
    resumed_mid_run = 0
    for i in range(10):
        out = tmp_path / f"k{i}"
        proc = subprocess.Popen(argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2:    # anywhere from start-up on: before the first save, or (rarely) after the end
            time.sleep(rng.uniform(0.0, 8.0))
        else:        # after the first saved epoch, with 5 epochs still to go: inside an epoch, a save, a rename
            state = resume_dir(out) / "state.pt"
            deadline = time.monotonic() + 120
            while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 3.0 * epoch_seconds))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = subprocess.run(argv(out), capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        resumed_mid_run += metrics["resumed_from_epoch"] > 0
        assert _same(_weights(out), whole), f"kill {i} resumed to other weights"
        assert not resume_dir(out).exists()
    assert resumed_mid_run >= 5, "too few kills landed after a saved epoch to test resuming"


def test_an_interrupted_teacher_resumes_to_the_uninterrupted_weights(tmp_path, prepared, monkeypatch):
    """Teacher training shares the mechanism: a CPU teacher outlives a session only if it can continue."""
    from pipeline.config import TeacherConfig
    from pipeline.names import TEACHER_CHECKPOINT as TEACHER_CKPT
    from pipeline.teacher.fit import train_teacher

    kw = dict(dataset=prepared, arch="cnn", epochs=3, device="cpu", batch_size=32, threads=1)
    whole = train_teacher(TeacherConfig(out_dir=tmp_path / "whole", **kw), progress=False)
    cfg = TeacherConfig(out_dir=tmp_path / "killed", **kw)
    _killed_in_epoch(3, lambda: train_teacher(cfg, progress=False), monkeypatch)
    assert (resume_dir(cfg.out_dir) / "state.pt").is_file() and not (cfg.out_dir / TEACHER_CKPT).exists()
    resumed = train_teacher(cfg, progress=False)
    assert resumed["resumed_from_epoch"] == 2 and whole["resumed_from_epoch"] == 0
    weights = lambda d: torch.load(d / TEACHER_CKPT, weights_only=True)["state_dict"]   # noqa: E731
    assert _same(weights(tmp_path / "whole"), weights(cfg.out_dir))
    assert resumed["test_acc"] == whole["test_acc"] and len(resumed["history"]) == 3
    assert not resume_dir(cfg.out_dir).exists()
    other = TeacherConfig(out_dir=tmp_path / "other", **{**kw, "epochs": 2})
    _killed_in_epoch(2, lambda: train_teacher(other, progress=False), monkeypatch)   # the state after epoch 1
    with pytest.raises(UsageError, match=r"another recipe \(epochs\).*rm -r"):
        train_teacher(TeacherConfig(out_dir=tmp_path / "other", **{**kw, "epochs": 4}), progress=False)
