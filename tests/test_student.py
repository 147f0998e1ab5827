import json
import os
import re
import shutil

import pytest

from pipeline.config import StudentConfig, TeacherConfig
from pipeline.errors import UsageError
from pipeline.student.distill import train_student
from pipeline.teacher.fit import train_teacher


def config(tmp_path, prepared, cache_file, **kw):
    return StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "runs" / "r", student="cnn-tiny",
                         epochs=3, batch_size=16, **kw)


def test_student_run_writes_model_and_metrics(tmp_path, prepared, cache_file, teacher_dir):
    m = train_student(config(tmp_path, prepared, cache_file, teacher_record=teacher_dir / "teacher.json"),
                      progress=False)
    written = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert written == m
    for key in ("test_acc", "params", "size_bytes", "student", "T", "alpha", "seed", "epochs",
                "seconds_per_epoch", "cache_fingerprint"):
        assert key in m
    assert 0 <= m["test_acc"] <= 1 and m["params"] < 30_000 and m["size_bytes"] > 0
    assert (tmp_path / "runs" / "r" / "model.pt").is_file()
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["r"]   # no temporary left


def test_same_seed_same_numbers(tmp_path, prepared, cache_file):
    a = train_student(config(tmp_path, prepared, cache_file, seed=3), progress=False)
    b = train_student(config(tmp_path, prepared, cache_file, seed=3), progress=False)
    assert a["test_acc"] == b["test_acc"] and a["cache_fingerprint"] == b["cache_fingerprint"]


@pytest.mark.parametrize("kw,match", [({"T": 0.0}, r"T must be a number in \[0.01, 100\]"), ({"T": float("nan")}, "T must be"),
                                      ({"alpha": 1.5}, r"ALPHA must be a number in \[0, 1\]"), ({"epochs": 0}, "EPOCHS")])
def test_config_refuses_bad_values(tmp_path, kw, match):
    with pytest.raises(UsageError, match=match):
        StudentConfig(cache=tmp_path, dataset=tmp_path, out_dir=tmp_path, **kw)


def test_a_replaced_teacher_is_seen_in_its_weights_not_its_record(tmp_path, prepared, cache_file, teacher_dir):
    """teacher.pt swapped for another teacher's, with its mtime and teacher.json kept (so Make sees nothing
    new): the student reads the fingerprint from the weights and refuses the cache the old teacher made."""
    other = tmp_path / "other-teacher"
    train_teacher(TeacherConfig(dataset=prepared, out_dir=other, arch="cnn", epochs=1, device="cpu", seed=3,
                                batch_size=32), progress=False)
    checkpoint = teacher_dir / "teacher.pt"
    stat = checkpoint.stat()
    record = (teacher_dir / "teacher.json").read_bytes()
    shutil.copyfile(other / "teacher.pt", checkpoint)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (teacher_dir / "teacher.json").read_bytes() == record
    with pytest.raises(UsageError, match="different teacher than the one there now .* delete it"):
        train_student(config(tmp_path, prepared, cache_file, teacher_record=teacher_dir / "teacher.json"),
                      progress=False)
    assert not (tmp_path / "runs" / "r").exists()


def test_streamed_cache_trains_the_same_student(tmp_path, prepared, cache_file):
    memory = train_student(config(tmp_path, prepared, cache_file, seed=1), progress=False)
    stream = train_student(config(tmp_path, prepared, cache_file, seed=1, cache_memory_mb=0), progress=False)
    assert memory["cache_in_memory"] and not stream["cache_in_memory"]
    assert stream["test_acc"] == pytest.approx(memory["test_acc"], abs=1e-9)


def test_a_run_keeps_its_history_and_tensorboard_reads_the_same_back(tmp_path, prepared, cache_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = train_student(config(tmp_path, prepared, cache_file, holdout=16, tensorboard_dir=tmp_path / "tb"),
                      progress=False)
    history = m["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(h["seconds"] > 0 and h["lr"] > 0 and h["train_loss"] > 0 and 0 <= h["val_acc"] <= 1 for h in history)
    assert history[-1]["test_acc"] == m["test_acc"] and history[-1]["val_acc"] == m["val_acc"]
    assert history[0]["lr"] < max(h["lr"] for h in history)     # the one-cycle warm-up
    events = EventAccumulator(str(tmp_path / "tb" / "r"))
    events.Reload()
    for key in ("test_acc", "train_loss", "lr", "val_acc"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2, 3]
        assert [e.value for e in logged] == pytest.approx([h[key] for h in history], rel=1e-6), key


def test_training_shows_live_progress_with_rate_and_loss(tmp_path, prepared, cache_file, capfd):
    train_student(config(tmp_path, prepared, cache_file), progress=True)
    err = capfd.readouterr().err
    assert "student cnn-tiny epoch 1/3" in err and "batch/s" in err and "loss=" in err
    assert re.search(r"student cnn-tiny epoch 3/3: train loss [0-9.]+, test [0-9.]+%", err)


def test_without_tensorboard_installed_log_is_one_clear_error(tmp_path, monkeypatch):
    import builtins

    from pipeline.training.history import EpochLog

    real_import = builtins.__import__

    def blocked(name, *args, **kw):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(UsageError, match=r"LOG=tensorboard needs the tensorboard package"):
        EpochLog(tmp_path, "r")


def test_a_second_writer_of_one_run_is_refused(tmp_path, prepared, cache_file):
    from pipeline.files import exclusive_writer

    cfg = config(tmp_path, prepared, cache_file)
    with exclusive_writer(cfg.out_dir, what="student run"):     # what a first, still running writer holds
        with pytest.raises(UsageError, match=r"another student run is writing .*/runs/r; wait for it"):
            train_student(cfg, progress=False)
    assert not cfg.out_dir.exists()
    assert train_student(cfg, progress=False)["epochs"] == 3     # the lock dies with its holder
