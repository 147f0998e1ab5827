import json

import pytest

from pipeline.config import StudentConfig
from pipeline.errors import UsageError
from pipeline.student import train_student


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


@pytest.mark.parametrize("kw,match", [({"T": 0.0}, "T must be a number > 0"), ({"T": float("nan")}, "T must be"),
                                      ({"alpha": 1.5}, r"ALPHA must be a number in \[0, 1\]"), ({"epochs": 0}, "EPOCHS")])
def test_config_refuses_bad_values(tmp_path, kw, match):
    with pytest.raises(UsageError, match=match):
        StudentConfig(cache=tmp_path, dataset=tmp_path, out_dir=tmp_path, **kw)


def test_cache_from_another_teacher_is_refused(tmp_path, prepared, cache_file, teacher_dir):
    record = teacher_dir / "teacher.json"
    other = json.loads(record.read_text()) | {"fingerprint": "0" * 16}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(UsageError, match="different teacher"):
        train_student(config(tmp_path, prepared, cache_file, teacher_record=tmp_path / "other.json"), progress=False)
    assert not (tmp_path / "runs" / "r").exists()


def test_streamed_cache_trains_the_same_student(tmp_path, prepared, cache_file):
    memory = train_student(config(tmp_path, prepared, cache_file, seed=1), progress=False)
    stream = train_student(config(tmp_path, prepared, cache_file, seed=1, cache_memory_mb=0), progress=False)
    assert memory["cache_in_memory"] and not stream["cache_in_memory"]
    assert stream["test_acc"] == pytest.approx(memory["test_acc"], abs=1e-9)
