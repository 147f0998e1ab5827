"""Transfer sets (TRANSFER=<.npz or folder of images>): cached after the train rows with no label, learnt from by
distilled students with the soft term only, and refused whenever cache and images disagree."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import make_dataset

from pipeline.cache.ensemble import write_ensemble
from pipeline.cache.reader import LogitCache
from pipeline.config import EnsembleConfig, LogitsConfig, StudentConfig, TeacherConfig
from pipeline.errors import UsageError
from pipeline.student.distill import train_student
from pipeline.teacher.fit import train_teacher
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.training.run_dir import MODEL_FILE

POOL = 40   # transfer images


@pytest.fixture
def pool(tmp_path):
    path = tmp_path / "pool.npz"
    np.savez(path, x=make_dataset(n_train=POOL, seed=7).x_train)
    return path


def _pass(tmp_path, prepared, teacher_dir, name, **kw):
    out = tmp_path / "cache" / f"{name}.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=out, device="cpu",
                                      **kw), progress=False)
    return out


@pytest.fixture
def pool_cache(tmp_path, prepared, teacher_dir, pool):
    return _pass(tmp_path, prepared, teacher_dir, "pool", transfer=pool)


def test_the_transfer_rows_follow_the_train_rows_with_no_label(pool_cache, cache_file, tiny_dataset):
    c = LogitCache(pool_cache)
    n, C = len(tiny_dataset.y_train), tiny_dataset.num_classes
    assert c.train_rows == n + POOL and c.transfer_rows == POOL and c.attrs["format_version"] == 2
    assert np.array_equal(c.labels("train")[:n], tiny_dataset.y_train) and (c.labels("train")[n:] == C).all()
    plain = LogitCache(cache_file)
    assert plain.attrs["format_version"] == 1 and plain.transfer_rows == 0     # older readers still read it
    assert torch.allclose(c.logits("train")[:n], plain.logits("train"))       # the labelled rows are untouched
    assert c.teacher_accuracy("train") == plain.teacher_accuracy("train")    # transfer rows have no label


def test_a_distilled_student_learns_from_the_transfer_rows_and_scratch_never_sees_them(
        tmp_path, prepared, pool, pool_cache, cache_file):
    kw = dict(dataset=prepared, student="mlp", epochs=2, batch_size=16)
    cfg = StudentConfig(cache=pool_cache, transfer=pool, out_dir=tmp_path / "kd", alpha=0.5, **kw)
    assert "-tr_pool-" in cfg.run_name
    kd = train_student(cfg, progress=False)
    assert kd["transfer_rows"] == POOL and kd["transfer"] == "pool"
    zero = train_student(StudentConfig(cache=pool_cache, transfer=pool, out_dir=tmp_path / "zero", alpha=1,
                                       labels=0, **kw), progress=False)
    assert zero["labels"] == 0 and 0 < zero["test_acc"] <= 1
    # scratch trains on the labelled rows only, so the transfer set cannot change it
    scratch = train_student(StudentConfig(cache=pool_cache, transfer=pool, out_dir=tmp_path / "s1", alpha=0, **kw),
                            progress=False)
    assert scratch["transfer_rows"] == 0 and scratch["transfer"] is None
    train_student(StudentConfig(cache=cache_file, out_dir=tmp_path / "s2", alpha=0, **kw), progress=False)
    a, b = (torch.load(tmp_path / d / MODEL_FILE, weights_only=True)["state_dict"] for d in ("s1", "s2"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cache_and_transfer_images_must_agree(tmp_path, prepared, pool, pool_cache, cache_file):
    kw = dict(dataset=prepared, student="mlp", epochs=1, alpha=0.5)
    with pytest.raises(UsageError, match="also holds 40 transfer rows"):
        train_student(StudentConfig(cache=pool_cache, out_dir=tmp_path / "a", **kw), progress=False)
    with pytest.raises(UsageError, match="holds no logits for the transfer set"):
        train_student(StudentConfig(cache=cache_file, transfer=pool, out_dir=tmp_path / "b", **kw), progress=False)
    other = tmp_path / "other.npz"
    np.savez(other, x=make_dataset(n_train=POOL, seed=8).x_train)
    with pytest.raises(UsageError, match="another transfer set"):
        train_student(StudentConfig(cache=pool_cache, transfer=other, out_dir=tmp_path / "c", **kw), progress=False)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_a_transfer_set_of_another_shape_or_with_labels(tmp_path, prepared, teacher_dir, tiny_dataset):
    wrong = tmp_path / "rgb.npz"
    np.savez(wrong, x=np.zeros((5, 3, 12, 12), np.uint8))
    with pytest.raises(UsageError, match=r"shape \(3, 12, 12\).*the dataset's are \(1, 12, 12\)"):
        _pass(tmp_path, prepared, teacher_dir, "wrong", transfer=wrong)
    empty = tmp_path / "empty.npz"
    np.savez(empty, y=np.zeros(3, np.int64))
    with pytest.raises(UsageError, match="holds no images"):
        _pass(tmp_path, prepared, teacher_dir, "empty", transfer=empty)
    assert not (tmp_path / "cache" / "wrong.h5").exists()
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, x=make_dataset(n_train=8, seed=9).x_train, y=np.zeros(8, np.int64))
    out = tmp_path / "l.h5"
    proc = subprocess.run([sys.executable, "-m", "stages.cli", "teacher-logits", "--teacher",
                           str(teacher_dir / "teacher.pt"), "--dataset", str(prepared), "--out", str(out),
                           "--transfer", str(labelled), "--device", "cpu"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "also holds labels" in proc.stderr and "ignored" in proc.stderr
    c = LogitCache(out)
    assert c.attrs["transfer_labels_ignored"] and (c.labels("train")[-8:] == tiny_dataset.num_classes).all()


def test_views_mixup_topk_and_float16_cover_the_transfer_rows(tmp_path, prepared, teacher_dir, pool):
    viewed = _pass(tmp_path, prepared, teacher_dir, "viewed", transfer=pool, views=2, mixup=1.0)
    c = LogitCache(viewed)
    assert c.rows("train_views") == 2 * (96 + POOL) and (c.labels("train_views")[-2 * POOL:] == 3).all()
    m = train_student(StudentConfig(cache=viewed, transfer=pool, dataset=prepared, out_dir=tmp_path / "r",
                                    student="mlp", epochs=2, alpha=0.5, labels=12, replay=2), progress=False)
    assert m["transfer_rows"] == POOL and m["replay"] == 2 and np.isfinite(m["history"][-1]["train_loss"])
    small = LogitCache(_pass(tmp_path, prepared, teacher_dir, "small", transfer=pool, topk=2, dtype="float16"))
    assert small.train_rows == 96 + POOL and (small.labels("train")[96:] == 3).all()


def test_an_ensemble_keeps_its_members_transfer_rows(tmp_path, prepared, teacher_dir, pool, pool_cache):
    second = tmp_path / "teacher2"
    train_teacher(TeacherConfig(dataset=prepared, out_dir=second, arch="cnn", epochs=1, device="cpu", seed=1,
                                batch_size=32), progress=False)
    other = _pass(tmp_path, prepared, second, "pool2", transfer=pool)
    out = tmp_path / "ensemble.h5"
    write_ensemble(EnsembleConfig(members=(pool_cache, other), out=out))
    e = LogitCache(out)
    assert e.transfer_rows == POOL and e.attrs["transfer_fingerprint"] == LogitCache(pool_cache).attrs[
        "transfer_fingerprint"]
    plain = _pass(tmp_path, prepared, second, "plain2")
    with pytest.raises(UsageError, match="disagree on transfer_rows"):
        write_ensemble(EnsembleConfig(members=(pool_cache, plain), out=tmp_path / "bad.h5"))


def test_broken_transfer_labels_and_newer_formats_are_refused(tmp_path, pool_cache):
    edited = tmp_path / "edited.h5"
    edited.write_bytes(pool_cache.read_bytes())
    with h5py.File(edited, "r+") as f:
        labels = f["train/labels"][()]
        labels[0] = 3                      # a labelled row marked "no label"
        del f["train/labels"]
        f["train"].create_dataset("labels", data=labels, fletcher32=True, chunks=True)
    with pytest.raises(UsageError, match="transfer rows' rule"):
        LogitCache(edited)
    newer = tmp_path / "newer.h5"
    newer.write_bytes(pool_cache.read_bytes())
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = 4
    with pytest.raises(UsageError, match="format_version 4 is not one this softcache reads"):
        LogitCache(newer)


def test_a_folder_of_images_is_a_transfer_set_with_the_npz_sets_rows(tmp_path, prepared, teacher_dir, pool):
    """TRANSFER=<folder>: files in any layout, sorted by path, decoded to the dataset's shape; the same
    pixels as the .npz give the same cache rows, and an edited file is refused by the student."""
    from PIL import Image

    images = np.load(pool)["x"]
    folder = tmp_path / "pool"
    for i, image in enumerate(images):
        (folder / f"part{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(folder / f"part{i % 3}" / f"{i:03d}.png")
    order = sorted(range(POOL), key=lambda i: f"part{i % 3}/{i:03d}.png")
    np.savez(tmp_path / "sorted.npz", x=images[order])
    from_folder = _pass(tmp_path, prepared, teacher_dir, "folder", transfer=folder)
    from_npz = _pass(tmp_path, prepared, teacher_dir, "sorted", transfer=tmp_path / "sorted.npz")
    a, b = LogitCache(from_folder), LogitCache(from_npz)
    assert a.transfer_rows == POOL and a.attrs["transfer_fingerprint"] == b.attrs["transfer_fingerprint"]
    assert torch.equal(a.logits("train"), b.logits("train"))
    kw = dict(dataset=prepared, student="mlp", epochs=1, batch_size=16, alpha=0.5)
    train_student(StudentConfig(cache=from_folder, transfer=folder, out_dir=tmp_path / "ok", **kw), progress=False)
    pixels = np.asarray(Image.open(folder / "part0" / "000.png")).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(folder / "part0" / "000.png")
    with pytest.raises(UsageError, match="transfer"):
        train_student(StudentConfig(cache=from_folder, transfer=folder, out_dir=tmp_path / "stale", **kw),
                      progress=False)
    (folder / "part1" / "001.png").write_bytes(b"junk")
    with pytest.raises(UsageError, match=r"part1/001.png: not a readable image"):
        _pass(tmp_path, prepared, teacher_dir, "broken", transfer=folder)
