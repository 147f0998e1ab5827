import gzip
import hashlib

import numpy as np
import pytest

from pipeline.data.prepare import (
    Dataset,
    download_verified,
    find_source,
    limit_train,
    load_dataset,
    load_idx_dir,
    load_npz,
    load_prepared,
    read_idx,
    save_prepared,
    write_idx,
)
from pipeline.errors import UsageError
from tests.conftest import make_dataset

PARTS = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
         "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def write_idx_dir(directory, d: Dataset, gz: bool):
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in PARTS.items():
        arr = getattr(d, key)
        arr = arr[:, 0] if arr.ndim == 4 else arr
        write_idx(directory / (stem + (".gz" if gz else "")), arr)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, tiny_dataset, gz):
    write_idx_dir(tmp_path / "idx", tiny_dataset, gz)
    d = load_idx_dir(tmp_path / "idx", name="tiny")
    np.testing.assert_array_equal(d.x_train, tiny_dataset.x_train)
    np.testing.assert_array_equal(d.y_test, tiny_dataset.y_test)
    assert d.x_train.shape == (96, 1, 12, 12)


def test_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 8)
    with pytest.raises(UsageError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "x.gz", np.zeros((4, 5, 5), np.uint8))
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    (tmp_path / "cut").write_bytes(raw[:-3])
    with pytest.raises(UsageError, match="fetch it again"):
        read_idx(tmp_path / "cut")


def test_npz_accepts_nhw_and_float_images(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.random((10, 6, 6)), y_train=np.arange(10) % 4,
             x_test=rng.random((5, 6, 6)), y_test=np.arange(5) % 4)
    d = load_npz(tmp_path / "d.npz")
    assert d.x_train.shape == (10, 1, 6, 6) and d.x_train.dtype == np.uint8
    assert d.num_classes == 4 and d.name == "d"


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "missing.npz", x_train=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(UsageError, match="missing arrays"):
        load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "floaty.npz", x_train=np.zeros((2, 3, 3), np.uint8), y_train=np.array([0.5, 1.0]),
             x_test=np.zeros((1, 3, 3), np.uint8), y_test=np.array([0]))
    with pytest.raises(UsageError, match="integer labels"):
        load_npz(tmp_path / "floaty.npz")
    np.savez(tmp_path / "shapes.npz", x_train=np.zeros((2, 3, 3), np.uint8), y_train=np.array([0, 1]),
             x_test=np.zeros((1, 4, 4), np.uint8), y_test=np.array([0]))
    with pytest.raises(UsageError, match="differ in shape"):
        load_npz(tmp_path / "shapes.npz")


def test_labels_out_of_range_are_refused(tiny_dataset):
    bad = tiny_dataset.y_train.copy()
    bad[0] = 7
    with pytest.raises(UsageError, match=r"\[0, 3\)"):
        Dataset("bad", tiny_dataset.x_train, bad, tiny_dataset.x_test, tiny_dataset.y_test, tiny_dataset.class_names)


def test_fingerprint_is_content_based():
    a, b = make_dataset(seed=0), make_dataset(seed=0)
    assert a.fingerprint == b.fingerprint
    assert make_dataset(seed=1).fingerprint != a.fingerprint
    assert limit_train(a, 10).fingerprint != a.fingerprint
    assert len(limit_train(a, 10).y_train) == 10 and limit_train(a, 0) is a


def test_source_search_order(tmp_path, tiny_dataset):
    raw, system, explicit = tmp_path / "raw", tmp_path / "system", tmp_path / "explicit"
    write_idx_dir(system, tiny_dataset, gz=True)
    assert find_source("fashion-mnist", None, raw, system, download=False) == system
    write_idx_dir(raw, tiny_dataset, gz=False)
    assert find_source("fashion-mnist", None, raw, system, download=False) == raw
    write_idx_dir(explicit, tiny_dataset, gz=True)
    assert find_source("fashion-mnist", explicit, raw, system, download=False) == explicit


def test_no_data_found_says_how_to_get_it(tmp_path):
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", None, tmp_path / "raw", tmp_path / "none", download=False)
    with pytest.raises(UsageError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", None, tmp_path / "raw", tmp_path / "none", download=False)


def test_download_is_checksum_verified(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "a.gz").write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    download_verified(served.as_uri() + "/", {"a.gz": good}, tmp_path / "dest")
    assert (tmp_path / "dest" / "a.gz").read_bytes() == b"payload"
    with pytest.raises(UsageError, match="checksum mismatch"):
        download_verified(served.as_uri() + "/", {"a.gz": "0" * 32}, tmp_path / "dest2")
    assert not (tmp_path / "dest2" / "a.gz").exists()


def test_prepared_round_trip_and_tamper_detection(tmp_path, tiny_dataset):
    save_prepared(tiny_dataset, tmp_path / "p.npz")
    d = load_prepared(tmp_path / "p.npz")
    assert d.fingerprint == tiny_dataset.fingerprint and d.class_names == tiny_dataset.class_names
    with np.load(tmp_path / "p.npz") as f:
        arrays = dict(f)
    arrays["y_train"] = (arrays["y_train"] + 1) % 3
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(UsageError, match="fingerprint"):
        load_prepared(tmp_path / "tampered.npz")
    with pytest.raises(UsageError, match=r"call pipeline\.data\.prepare\.save_prepared"):
        load_prepared(tmp_path / "absent.npz")


def test_normalization_is_the_exact_per_channel_mean_and_std():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (5000, 3, 4, 4), dtype=np.uint8)
    d = Dataset("rgb", x, rng.integers(0, 2, 5000), x[:10], np.zeros(10, np.int64), ("a", "b"))
    mean, std = d.normalization()
    ref = x.astype(np.float64) / 255
    assert np.allclose(mean, ref.mean(axis=(0, 2, 3)), atol=1e-12)
    assert np.allclose(std, ref.std(axis=(0, 2, 3)), atol=1e-12)


def _rgb_npz(path, layout):
    rng = np.random.default_rng(0)
    x = {s: rng.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8) for s, n in (("train", 20), ("test", 10))}
    if layout == "nhwc":
        x = {s: v.transpose(0, 2, 3, 1) for s, v in x.items()}
    np.savez(path, x_train=x["train"], y_train=np.arange(20) % 4, x_test=x["test"], y_test=np.arange(10) % 4)
    return x


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_three_channel_images_read_the_same_in_either_layout(tmp_path, layout):
    x = _rgb_npz(tmp_path / "rgb.npz", layout)
    d = load_npz(tmp_path / "rgb.npz")
    assert d.image_shape == (3, 32, 32)
    expected = x["train"] if layout == "nchw" else x["train"].transpose(0, 3, 1, 2)
    assert np.array_equal(d.x_train, expected)
    assert np.array_equal(load_npz(tmp_path / "rgb.npz", layout).x_train, expected)   # said outright


def test_an_ambiguous_layout_is_refused_unless_said(tmp_path):
    np.savez(tmp_path / "cube.npz", x_train=np.zeros((4, 3, 8, 3), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 3, 8, 3), np.uint8), y_test=np.zeros(2, np.int64))
    with pytest.raises(UsageError, match=r"could be channel-first or channel-last; say which with LAYOUT=nchw"):
        load_npz(tmp_path / "cube.npz")
    assert load_npz(tmp_path / "cube.npz", "nhwc").image_shape == (3, 3, 8)


def test_images_holding_nan_are_refused(tmp_path):
    x = np.full((5, 1, 8, 8), 0.5, np.float32)
    x[3, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=x, y_train=np.zeros(5, np.int64), x_test=x[:2].copy(),
             y_test=np.zeros(2, np.int64))
    with pytest.raises(UsageError, match=r"x_train: 1 images hold NaN or Inf \(the first is image 3\)"):
        load_npz(tmp_path / "nan.npz")


def test_a_stray_label_is_refused_not_made_a_class(tmp_path):
    y = np.arange(20) % 10
    y[7] = 42
    np.savez(tmp_path / "stray.npz", x_train=np.zeros((20, 8, 8), np.uint8), y_train=y,
             x_test=np.zeros((10, 8, 8), np.uint8), y_test=np.arange(10))
    with pytest.raises(UsageError, match=r"labels hold 11 values in 0\.\.42, so 32 classes have no image"):
        load_npz(tmp_path / "stray.npz")
