"""An edited cache is caught: fletcher32 is recomputed by h5py on every write, so edits made with h5py
pass the checksums; the digests written with the values, the recorded train accuracy and
`softcache verify --teacher` (re-scoring a seeded sample with the teacher) do not."""

import json

import h5py
import numpy as np
import pytest

from pipeline.cache.format import seal
from pipeline.cache.reader import LogitCache
from pipeline.config import LogitsConfig, TeacherConfig
from pipeline.errors import UsageError
from pipeline.teacher.fit import train_teacher
from pipeline.teacher.logits_pass import write_teacher_logits
from tests.test_cli import assert_one_line_error, run_cli


def _reverse_columns(f, other):
    f["train/logits"][...] = f["train/logits"][()][:, ::-1]


def _scale_one_row(f, other):
    logits = f["train/logits"][()]
    logits[17] *= 1.5                    # the argmax stays: only the digest sees it
    f["train/logits"][...] = logits


def _shuffle_rows(f, other):
    f["train/logits"][...] = np.random.default_rng(0).permutation(f["train/logits"][()])


def _swap_labels(f, other):
    labels = f["train/labels"][()]
    first = np.flatnonzero(labels != labels[0])[0]
    labels[[0, first]] = labels[[first, 0]]
    f["train/labels"][...] = labels


def _another_teachers_logits(f, other):
    with h5py.File(other, "r") as g:
        f["train/logits"][...] = g["train/logits"][()]


def _raise_temperature(f, other):       # every logit now reads 50x larger: no dataset changed
    f.attrs["temperature"] = 50.0


def _drop_a_view_attribute(f, other):
    f.attrs["view_pad"] = 9


EDITS = [_reverse_columns, _scale_one_row, _shuffle_rows, _swap_labels, _another_teachers_logits, _raise_temperature,
         _drop_a_view_attribute]


@pytest.fixture
def other_cache(tmp_path, prepared):
    """The same dataset's cache from a second teacher (another seed)."""
    out = tmp_path / "other"
    train_teacher(TeacherConfig(dataset=prepared, out_dir=out, arch="cnn", epochs=1, device="cpu", seed=7,
                                batch_size=32), progress=False)
    cache = tmp_path / "other.h5"
    write_teacher_logits(LogitsConfig(teacher=out / "teacher.pt", dataset=prepared, out=cache, device="cpu"),
                         progress=False)
    return cache


def test_a_cache_records_the_digest_of_every_dataset(cache_file):
    with h5py.File(cache_file, "r") as f:
        digests = json.loads(f.attrs["digests"])
        assert set(digests) == {f"{s}/{n}" for s in ("train", "test") for n in ("logits", "labels", "index")} | {
            "attrs"}
        assert 0 <= float(f.attrs["teacher_train_acc"]) <= 1
    assert LogitCache(cache_file).digests_checked


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__.strip("_"))
def test_five_edits_are_refused_by_the_reader_and_by_verify(cache_file, other_cache, prepared, capsys, edit):
    with h5py.File(cache_file, "r+") as f:
        edit(f, other_cache)
    with pytest.raises(UsageError, match="edited after it was made"):
        LogitCache(cache_file)
    code, _, err = run_cli(["verify", cache_file, "--dataset", prepared], capsys)
    assert_one_line_error(code, err, "differ from the digest written with them")


def test_verify_teacher_passes_the_teachers_cache_and_catches_a_rewritten_digest(
        cache_file, teacher_dir, prepared, capsys):
    code, out, _ = run_cli(["verify", cache_file, "--dataset", prepared, "--teacher", teacher_dir / "teacher.pt"],
                           capsys)
    assert code == 0 and "re-scored 96 train rows" in out and "re-scored 48 test rows" in out and " 0 differ" in out
    with h5py.File(cache_file, "r+") as f:     # a careful edit: rewrite the digests and accuracy too
        _scale_one_row(f, None)
    with h5py.File(cache_file, "r+") as f:
        seal(f)
    LogitCache(cache_file)                      # passes every check of the file itself ...
    code, out, err = run_cli(["verify", cache_file, "--dataset", prepared, "--teacher", teacher_dir / "teacher.pt"],
                             capsys)
    assert_one_line_error(code, err, "1 of 96 re-scored train rows (the first is row 17) are not")  # ... not this


def test_verify_teacher_re_renders_mixup_views_and_compares_top_k(tmp_path, teacher_dir, prepared, capsys):
    cache = tmp_path / "views.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=cache, device="cpu",
                                      views=3, mixup=1.0, dtype="float16", topk=2), progress=False)
    code, out, _ = run_cli(["verify", cache, "--dataset", prepared, "--teacher", teacher_dir / "teacher.pt",
                            "--sample", "500"], capsys)
    assert code == 0 and "re-scored 288 train_views rows" in out and out.count(" 0 differ") == 3, out
    with h5py.File(cache, "r+") as f:           # views shifted by one row, digests rewritten: --teacher sees it
        f["train_views/topk_logits"][...] = np.roll(f["train_views/topk_logits"][()], 1, axis=0)
        f["train_views/topk_classes"][...] = np.roll(f["train_views/topk_classes"][()], 1, axis=0)
        seal(f)
    code, _, err = run_cli(["verify", cache, "--dataset", prepared, "--teacher", teacher_dir / "teacher.pt",
                            "--sample", "500"], capsys)
    assert_one_line_error(code, err, "re-scored train_views rows")
