"""Bring your own teacher: TorchScript, torch.export programs and module:factory + weights
give the same cache as softcache's own checkpoint; anything else is one clear error."""

import zipfile

import numpy as np
import pytest
import torch

from pipeline.cache.reader import LogitCache
from pipeline.config import LogitsConfig
from pipeline.errors import UsageError
from pipeline.results.export import export_torchscript
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.training.checkpoint import load_checkpoint
from tests.conftest import SHAPE


def cache_from(tmp_path, prepared, teacher, name, **kw):
    out = tmp_path / f"{name}.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher, dataset=prepared, out=out, device="cpu", **kw))
    return LogitCache(out)


@pytest.fixture
def own(tmp_path, prepared, teacher_dir):
    model, _ = load_checkpoint(teacher_dir / "teacher.pt", "teacher", "teacher")
    return model, cache_from(tmp_path, prepared, teacher_dir / "teacher.pt", "own")


def assert_same_logits(a: LogitCache, b: LogitCache):
    for split in ("train", "test"):
        assert torch.allclose(a.logits(split), b.logits(split), atol=1e-5)
        assert np.array_equal(a.labels(split), b.labels(split))


def test_torchscript_teacher(tmp_path, prepared, own):
    model, reference = own
    export_torchscript(model, torch.rand(2, *SHAPE), tmp_path / "teacher.ts", {"student": "t", "class_names": []})
    cache = cache_from(tmp_path, prepared, tmp_path / "teacher.ts", "ts")
    assert_same_logits(cache, reference)
    assert cache.attrs["teacher"] == "teacher.ts" and len(cache.attrs["teacher_fingerprint"]) == 16
    assert cache.attrs["teacher_test_acc"] == pytest.approx(cache.teacher_accuracy("test"))


def test_exported_program_teacher(tmp_path, prepared, own):
    model, reference = own
    program = torch.export.export(model, (torch.rand(2, *SHAPE),), dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(program, tmp_path / "teacher.pt2")
    assert_same_logits(cache_from(tmp_path, prepared, tmp_path / "teacher.pt2", "pt2"), reference)


FACTORY = '''
from pipeline.models import create_teacher

def make(num_classes=3):
    return create_teacher("cnn", in_shape=(1, 12, 12), num_classes=num_classes)

def make_five():
    return make(5)
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch, own):
    (tmp_path / "my_teachers.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    model, _ = own
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    return tmp_path / "weights.pt"


def test_factory_teacher_with_weights(tmp_path, prepared, own, factory_module):
    _, reference = own
    cache = cache_from(tmp_path, prepared, "my_teachers:make", "factory", teacher_weights=factory_module)
    assert_same_logits(cache, reference)
    assert cache.attrs["teacher"] == "my_teachers:make"


@pytest.mark.parametrize("spec,match", [
    ("no_such_module:make", "cannot import 'make' from module 'no_such_module'"),
    ("my_teachers:missing", "cannot import 'missing'"),
    ("my_teachers:make_five", "do not load into my_teachers:make_five"),
])
def test_bad_factories_are_one_clear_error(tmp_path, prepared, factory_module, spec, match):
    with pytest.raises(UsageError, match=match):
        cache_from(tmp_path, prepared, spec, "bad", teacher_weights=factory_module)
    assert not (tmp_path / "bad.h5").exists()


def test_factory_without_weights_is_refused(tmp_path, prepared, factory_module):
    with pytest.raises(UsageError, match="needs its weights: TEACHER_WEIGHTS"):
        cache_from(tmp_path, prepared, "my_teachers:make", "bad")


def test_files_that_are_not_models_are_refused(tmp_path, prepared):
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as z:
        z.writestr("hello.txt", "not a model")
    for path in (tmp_path / "junk.pt", tmp_path / "zip.pt"):
        with pytest.raises(UsageError, match="is not a model file"):
            cache_from(tmp_path, prepared, path, "bad")


def test_teacher_with_the_wrong_number_of_classes_is_refused(tmp_path, prepared):
    from pipeline.models import create_teacher
    five = create_teacher("cnn", in_shape=SHAPE, num_classes=5).eval()
    export_torchscript(five, torch.rand(2, *SHAPE), tmp_path / "five.ts", {"student": "t", "class_names": []})
    with pytest.raises(UsageError, match=r"returns \(2, 5\) for 2 images but the dataset has 3 classes"):
        cache_from(tmp_path, prepared, tmp_path / "five.ts", "bad")
    assert not (tmp_path / "bad.h5").exists()
