"""Bring your own data: a generated 3x32x32 dataset with 100 classes goes through every
stage (prepare, teacher, teacher pass, students of the registry, PS-KD, export) and each
model adapts to its input shape and class count."""

import numpy as np
import pytest

from pipeline.cache.reader import LogitCache
from pipeline.config import (
    ExportConfig,
    LogitsConfig,
    SelfDistillConfig,
    StudentConfig,
    TeacherConfig,
)
from pipeline.data.prepare import load_npz, load_prepared, save_prepared
from pipeline.models.images import image_students
from pipeline.results.export import export_run
from pipeline.student.distill import train_student
from pipeline.student.self_distill import self_distill
from pipeline.teacher.fit import train_teacher
from pipeline.teacher.logits_pass import write_teacher_logits

CLASSES = 100


@pytest.fixture(scope="module")
def rgb100(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rgb100")
    rng = np.random.default_rng(0)

    def split(n):   # float images in [0, 1]; each class brightens its own channel/row band
        y = rng.integers(0, CLASSES, n)
        y[:CLASSES] = np.arange(CLASSES)      # every class present, so the count is 100
        x = rng.random((n, 3, 32, 32), dtype=np.float32) * 0.3
        for i, label in enumerate(y):
            x[i, label % 3, (label // 3) % 32] += 0.7
        return x, y

    x_train, y_train = split(300)
    x_test, y_test = split(100)
    np.savez(tmp / "rgb100.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    prepared = tmp / "prepared.npz"
    save_prepared(load_npz(tmp / "rgb100.npz"), prepared)
    train_teacher(TeacherConfig(dataset=prepared, out_dir=tmp / "teacher", arch="cnn", epochs=1, device="cpu",
                                batch_size=64), progress=False)
    cache = tmp / "cache.h5"
    write_teacher_logits(LogitsConfig(teacher=tmp / "teacher" / "teacher.pt", dataset=prepared, out=cache,
                                      device="cpu"))
    return tmp, prepared, cache


def test_prepared_dataset_keeps_shape_classes_and_own_statistics(rgb100):
    _, prepared, cache = rgb100
    data = load_prepared(prepared)
    assert data.image_shape == (3, 32, 32) and data.num_classes == CLASSES
    mean, std = data.normalization()
    assert len(mean) == 3 and all(0.1 < m < 0.5 for m in mean) and all(s > 0 for s in std)
    c = LogitCache(cache)
    assert c.num_classes == CLASSES and c.logits("test").shape == (100, CLASSES)


@pytest.mark.parametrize("student", image_students())
def test_every_student_trains_and_exports_on_3x32x32_with_100_classes(rgb100, student):
    tmp, prepared, cache = rgb100
    out = tmp / "runs" / student
    m = train_student(StudentConfig(cache=cache, dataset=prepared, out_dir=out, student=student, epochs=1,
                                    batch_size=64), progress=False)
    assert 0 <= m["test_acc"] <= 1 and m["params"] > 0
    report = export_run(ExportConfig(run_dir=out, formats=("onnx",)))
    assert report["parity"]["onnx"]["argmax_agreement"] == 1.0
    assert report["metadata"]["input"]["shape"] == ["N", 3, 32, 32]
    assert len(report["metadata"]["class_names"]) == CLASSES


def test_self_distillation_on_3x32x32(rgb100):
    tmp, prepared, _ = rgb100
    m = self_distill(SelfDistillConfig(dataset=prepared, out_dir=tmp / "runs" / "pskd", student="cnn-tiny",
                                       epochs=2, batch_size=64), progress=False)
    assert m["epochs"] == 2 and 0 <= m["test_acc"] <= 1
