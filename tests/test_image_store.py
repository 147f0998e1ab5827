"""Prepared images on disk (HDF5, read a batch at a time) behave as the in-memory arrays do: the
same rows for every kind of index, the same fingerprint, the same cache and bit for bit the
same student, and a damaged file is refused."""

import pickle

import h5py
import numpy as np
import pytest
import torch

from pipeline.config import LogitsConfig, StudentConfig
from pipeline.data.image_folder import FolderOptions, prepare_folder, read_folder
from pipeline.data.image_store import DiskImages, TorchImages, torch_images
from pipeline.data.prepare import load_prepared, save_prepared
from pipeline.errors import UsageError
from pipeline.student.distill import train_student
from pipeline.teacher.logits_pass import write_teacher_logits
from tests.test_image_folder import write_folder
from tests.test_resume import _same, _weights


@pytest.fixture
def on_disk(tmp_path, tiny_dataset):
    path = tmp_path / "dataset" / "tiny.h5"
    save_prepared(tiny_dataset, path)
    return path


def test_disk_images_index_like_the_array(on_disk, tiny_dataset):
    x, disk = tiny_dataset.x_train, load_prepared(on_disk).x_train
    assert isinstance(disk, DiskImages) and disk.shape == x.shape and len(disk) == len(x) and disk.ndim == 4
    for index in (5, -1, slice(3, 9), slice(None, None, 7), slice(90, 200), [7, 2, 7, 0], np.array([4, 5, 6]),
                  torch.tensor([9, 1]), np.arange(len(x)) % 3 == 0, (slice(2, 5), 0), np.array([], dtype=np.int64)):
        np.testing.assert_array_equal(disk[index], x[index.numpy() if isinstance(index, torch.Tensor) else index])
    with pytest.raises(IndexError):
        disk[[len(x)]]
    np.testing.assert_array_equal(np.asarray(disk), x)
    view = torch_images(disk)
    assert isinstance(view, TorchImages) and torch.equal(view[torch.tensor([3, 1])], torch.from_numpy(x[[3, 1]]))
    again = pickle.loads(pickle.dumps(disk))            # what a DataLoader worker gets: it opens its own file
    np.testing.assert_array_equal(again[[1, 2]], x[[1, 2]])


def test_the_disk_file_has_the_npz_fingerprint_and_refuses_a_flipped_byte(on_disk, prepared, tmp_path):
    assert load_prepared(on_disk).fingerprint == load_prepared(prepared).fingerprint
    with h5py.File(on_disk, "r") as f:
        offset = f["train/images"].id.get_offset()
    with open(on_disk, "r+b") as f:           # contiguous rows carry no HDF5 checksum: the fingerprint is it
        f.seek(offset + 100)
        byte = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(UsageError, match="content does not match its recorded fingerprint"):
        load_prepared(on_disk)
    (tmp_path / "junk.h5").write_bytes(b"no hdf5")
    with pytest.raises(UsageError, match="is not a prepared softcache dataset"):
        load_prepared(tmp_path / "junk.h5")


@pytest.mark.parametrize("recipe", [dict(alpha=0.5), dict(alpha=0.5, augment=True, holdout=10),
                                    dict(alpha=1.0, replay=3), dict(alpha=0.0, augment=True)])
def test_a_student_from_disk_is_bit_for_bit_the_in_memory_one(tmp_path, prepared, on_disk, recipe):
    views = tmp_path / "views.h5"
    cache = views if recipe.get("replay") else tmp_path / "clean.h5"
    write_teacher_logits(LogitsConfig(teacher=_teacher(tmp_path, prepared), dataset=prepared, out=cache, device="cpu",
                                      **({"views": 3, "mixup": 1.0} if recipe.get("replay") else {})), progress=False)
    runs = {}
    for name, data in (("memory", prepared), ("disk", on_disk)):
        cfg = StudentConfig(cache=cache, dataset=data, out_dir=tmp_path / name, student="cnn-tiny", epochs=2,
                            batch_size=16, threads=1, **recipe)
        runs[name] = train_student(cfg, progress=False)
    assert _same(_weights(tmp_path / "memory"), _weights(tmp_path / "disk"))
    assert runs["memory"]["test_acc"] == runs["disk"]["test_acc"]


def _teacher(tmp_path, prepared):
    from pipeline.config import TeacherConfig
    from pipeline.teacher.fit import train_teacher

    out = tmp_path / "teacher"
    if not (out / "teacher.pt").is_file():
        train_teacher(TeacherConfig(dataset=prepared, out_dir=out, arch="cnn", epochs=1, device="cpu", batch_size=32),
                      progress=False)
    return out / "teacher.pt"


def test_the_teacher_pass_from_disk_writes_the_in_memory_cache(tmp_path, prepared, on_disk):
    teacher = _teacher(tmp_path, prepared)
    for name, data in (("memory", prepared), ("disk", on_disk)):
        write_teacher_logits(LogitsConfig(teacher=teacher, dataset=data, out=tmp_path / f"{name}.h5", device="cpu",
                                          views=2, mixup=1.0, chunk_rows=40), progress=False)
    with h5py.File(tmp_path / "memory.h5") as a, h5py.File(tmp_path / "disk.h5") as b:
        for split in ("train", "test", "train_views"):
            assert np.array_equal(a[f"{split}/logits"][:], b[f"{split}/logits"][:]), split


def test_a_folder_decoded_to_disk_equals_the_folder_read_in_memory(tmp_path, tiny_dataset):
    write_folder(tmp_path / "f", tiny_dataset)
    bad = sorted((tmp_path / "f" / "train" / "left").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:60])                 # readable header, broken pixels: found while decoding
    options = FolderOptions(bad_images="skip")
    for limit in (0, 20):
        memory = read_folder(tmp_path / "f", options, limit=limit)
        prepare_folder(tmp_path / "f", tmp_path / f"f{limit}.h5", options, limit=limit)
        disk = load_prepared(tmp_path / f"f{limit}.h5")
        assert isinstance(disk.x_train, DiskImages) and disk.fingerprint == memory.fingerprint
        assert disk.source.record() == memory.source.record()
        if not limit:
            assert disk.source.skipped == (bad.relative_to(tmp_path / "f").as_posix(),)
        assert len(disk.y_train) == (limit or len(tiny_dataset.y_train) - 1)
        np.testing.assert_array_equal(np.asarray(disk.x_test), memory.x_test)


def test_chunked_rows_read_the_same_and_a_truncated_file_is_refused(on_disk, tiny_dataset, tmp_path):
    chunked = tmp_path / "chunked.h5"
    chunked.write_bytes(on_disk.read_bytes())
    with h5py.File(chunked, "r+") as f:          # rows in chunks (not softcache's layout): no pread offset
        rows = f["train/images"][:]
        del f["train/images"]
        f.create_dataset("train/images", data=rows, chunks=(8, *rows.shape[1:])).attrs["rows"] = len(rows)
    d = load_prepared(chunked)
    for index in ([7, 2, 7, 0], slice(3, 40), np.arange(10, 20)):
        np.testing.assert_array_equal(d.x_train[index], tiny_dataset.x_train[index])
    cut = tmp_path / "cut.h5"
    cut.write_bytes(on_disk.read_bytes()[:-4000])
    with pytest.raises(UsageError, match="is not a prepared softcache dataset"):
        load_prepared(cut)


def test_the_dataset_for_your_own_loop_reads_disk_images_in_worker_processes(on_disk, prepared, cache_file):
    from torch.utils.data import DataLoader

    from pipeline.cache.soft_targets import SoftTargetDataset

    disk, memory = SoftTargetDataset(cache_file, on_disk, T=4.0), SoftTargetDataset(cache_file, prepared, T=4.0)
    assert disk.paths is None                # arrays, not files
    disk.images[[0, 1]]                       # the parent opens the file first: workers must open their own
    batches = [list(DataLoader(d, batch_size=32, num_workers=2)) for d in (disk, memory)]
    for (xa, ta, ya), (xb, tb, yb) in zip(*batches):
        assert torch.equal(xa, xb) and torch.equal(ta, tb) and torch.equal(ya, yb)


def test_class_names_of_any_number_fit_in_a_prepared_file(tmp_path, tiny_dataset):
    """A prepared file keeps its class names as a dataset: 5,000 of them outgrow an HDF5 attribute."""
    import dataclasses

    names = tuple(f"class {i}" for i in range(5000))
    many = dataclasses.replace(tiny_dataset, class_names=names)
    path = tmp_path / "dataset" / "many.h5"
    save_prepared(many, path)
    assert load_prepared(path).class_names == names
