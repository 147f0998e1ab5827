"""The bank-vs-fresh fit: the teacher fits its own cached views exactly, and a replay run records its gap."""

import pytest
import torch

from pipeline.cache.reader import LogitCache
from pipeline.config import LogitsConfig, StudentConfig
from pipeline.student.bank_fit import bank_fit
from pipeline.student.distill import train_student
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.teacher.source import load_teacher
from pipeline.training.checkpoint import load_checkpoint

K = 4


@pytest.fixture
def mixup_bank(tmp_path, prepared, teacher_dir):
    out = tmp_path / "cache" / "tiny-v4-mx1.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=out, device="cpu",
                                      views=K, view_seed=7, mixup=1.0), progress=False)
    return out


def test_the_teacher_fits_bank_and_fresh_views_exactly(mixup_bank, tiny_dataset, teacher_dir):
    """Scored by the model that made the cache, every rendered view must give back its cached logits: a wrong
    view index, crop, flip or mixup partner would lower the agreement or raise the KL."""
    cache = LogitCache(mixup_bank)
    teacher = load_teacher(teacher_dir / "teacher.pt").model
    rows = torch.arange(len(tiny_dataset.y_train))
    fit = bank_fit(teacher, torch.from_numpy(tiny_dataset.x_train), cache, rows,
                   torch.from_numpy(tiny_dataset.y_train), 1, seed=0, pad=cache.attrs["view_pad"])
    assert fit["bank_views"] == 1 and fit["fresh_views"] == K - 1 and fit["rows"] == len(rows)
    for half in ("bank", "fresh"):
        assert fit[half]["agreement"] == 1.0
        assert fit[half]["kl"] == pytest.approx(0.0, abs=1e-4)
    # accuracy is against the dominant image's label, which a 2-epoch teacher on blends does not always give
    assert 0.0 < fit["bank"]["accuracy"] <= 1.0


def test_a_model_that_is_not_the_teacher_does_not_fit_exactly(mixup_bank, tiny_dataset, student_run):
    cache = LogitCache(mixup_bank)
    model, _ = load_checkpoint(student_run / "model.pt", "student", "student")
    rows = torch.arange(len(tiny_dataset.y_train))
    fit = bank_fit(model, torch.from_numpy(tiny_dataset.x_train), cache, rows,
                   torch.from_numpy(tiny_dataset.y_train), 2, seed=0, pad=cache.attrs["view_pad"])
    assert fit["bank"]["kl"] > 1e-3 and fit["fresh"]["kl"] > 1e-3


def test_a_replay_run_records_its_bank_and_fresh_fit(tmp_path, prepared, mixup_bank):
    out = tmp_path / "runs" / "replay2"
    metrics = train_student(StudentConfig(cache=mixup_bank, dataset=prepared, out_dir=out, student="cnn-tiny",
                                          epochs=2, batch_size=16, T=1.0, alpha=1.0, replay=2, augment=False),
                            progress=False)
    fit = metrics["bank_fit"]
    assert fit["bank_views"] == 2 and fit["fresh_views"] == K - 2 and fit["rows"] == 96
    for half in ("bank", "fresh"):
        assert 0.0 <= fit[half]["agreement"] <= 1.0 and fit[half]["kl"] > 0
    everything = train_student(StudentConfig(cache=mixup_bank, dataset=prepared, out_dir=tmp_path / "runs" / "all",
                                             student="cnn-tiny", epochs=1, batch_size=16, T=1.0, alpha=1.0,
                                             replay=K, augment=False), progress=False)
    assert everything["bank_fit"]["fresh"] is None and everything["bank_fit"]["fresh_views"] == 0
    clean = train_student(StudentConfig(cache=mixup_bank, dataset=prepared, out_dir=tmp_path / "runs" / "clean",
                                        student="cnn-tiny", epochs=1, batch_size=16), progress=False)
    assert clean["bank_fit"] is None
