"""Image folders (train/<class>/*, test/<class>/*): decoded exactly, labelled by sorted class
folder, and refused in one line once their files change. Tiny generated PNG and JPEG files."""

import os

import numpy as np
import pytest
from PIL import Image

from pipeline.data.image_folder import FolderOptions, changes, list_folder, read_folder
from pipeline.data.prepare import (
    Dataset,
    load_prepared,
    prepared_folder_is_current,
    save_prepared,
)
from pipeline.errors import UsageError
from tests.conftest import make_dataset
from tests.test_cli import assert_one_line_error, run_cli


def write_folder(root, data: Dataset, test: bool = True, suffix: str = ".png", rgb: bool = False):
    """Every image of ``data`` as a file named after its row; returns {relative path: (split, row)}."""
    where = {}
    for split in ("train", "test") if test else ("train",):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        for i, (image, label) in enumerate(zip(x, y)):
            rel = f"{split}/{data.class_names[label]}/{i:04d}{suffix}"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            picture = Image.fromarray(pixels)
            (picture.convert("RGB") if rgb else picture).save(path)
            where[rel] = (split, i)
    return where


@pytest.fixture
def folder(tmp_path):
    data = make_dataset(n_train=40, n_test=15)
    return tmp_path / "shapes", data, write_folder(tmp_path / "shapes", data)


def expected_rows(d: Dataset, data: Dataset, where: dict, split: str) -> np.ndarray:
    """The source images of ``d``'s rows, found from each row's path."""
    return np.stack([getattr(data, f"x_{s}")[i] for s, i in (where[p] for p in d.source.row_paths(split))])


def test_png_folder_gives_the_exact_pixels_and_the_sorted_class_labels(folder):
    root, data, where = folder
    d = read_folder(root)
    assert d.class_names == ("left", "middle", "right")          # sorted folder names
    assert d.image_shape == (1, 12, 12)                          # greyscale PNGs: CHANNELS auto -> 1
    assert len(d.y_train) == 40 and len(d.y_test) == 15
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(d, f"x_{split}"), expected_rows(d, data, where, split))
        labels = [d.class_names.index(p.split("/")[1]) for p in d.source.row_paths(split)]
        np.testing.assert_array_equal(getattr(d, f"y_{split}"), labels)
    # Training rows are shuffled by SPLIT_SEED (so LIMIT keeps every class), test rows in path order.
    assert d.source.row_paths("train") != sorted(d.source.row_paths("train"))
    assert d.source.row_paths("test") == sorted(d.source.row_paths("test"))
    other = read_folder(root, FolderOptions(split_seed=1))
    assert other.source.row_paths("train") != d.source.row_paths("train")
    assert sorted(other.source.row_paths("train")) == sorted(d.source.row_paths("train"))


def test_a_folder_and_an_npz_of_the_same_images_are_one_dataset(folder, tmp_path):
    root, data, where = folder
    d = read_folder(root)
    same = Dataset("shapes", expected_rows(d, data, where, "train"), d.y_train, expected_rows(d, data, where, "test"),
                   d.y_test, d.class_names)
    assert same.fingerprint == d.fingerprint
    for name in ("p.npz", "p.h5"):
        save_prepared(d, tmp_path / name)
        back = load_prepared(tmp_path / name)
        assert back.fingerprint == d.fingerprint and back.source.record() == d.source.record()
        assert back.source.row_paths("test") == d.source.row_paths("test")


def test_channels_and_image_size(tmp_path):
    data = make_dataset(n_train=6, n_test=3)
    write_folder(tmp_path / "f", data, rgb=True)
    d = read_folder(tmp_path / "f")
    assert d.image_shape == (3, 12, 12)                          # RGB files: CHANNELS auto -> 3
    assert read_folder(tmp_path / "f", FolderOptions(channels=1)).image_shape == (1, 12, 12)
    grey = read_folder(tmp_path / "f", FolderOptions(channels=1))
    np.testing.assert_array_equal(grey.x_train[:, 0], d.x_train[:, 0])   # grey written as RGB reads back as grey
    # Cover then crop the center: a 12x12 image scaled to 20 wide is 20x20, cropped to 8x20.
    wide = read_folder(tmp_path / "f", FolderOptions(image_size=(8, 20)))
    assert wide.image_shape == (3, 8, 20)
    big = Image.fromarray(d.x_train[0].transpose(1, 2, 0)).resize((20, 20), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(wide.x_train[0].transpose(1, 2, 0), np.asarray(big)[6:14])


def test_images_of_different_sizes_need_image_size(tmp_path):
    data = make_dataset(n_train=4, n_test=2)
    write_folder(tmp_path / "f", data)
    Image.new("L", (30, 20)).save(tmp_path / "f" / "train" / "left" / "odd.png")
    with pytest.raises(UsageError, match=r"images differ in size: .* is 12x12, train/left/odd.png is 20x30.*IMAGE_"):
        read_folder(tmp_path / "f")
    assert read_folder(tmp_path / "f", FolderOptions(image_size=(12, 12))).image_shape == (1, 12, 12)


def test_without_test_folder_a_seeded_fraction_is_held_out(tmp_path):
    data = make_dataset(n_train=50, n_test=1)
    write_folder(tmp_path / "f", data, test=False)
    d = read_folder(tmp_path / "f", FolderOptions(test_fraction=0.2))
    assert (len(d.y_train), len(d.y_test)) == (40, 10)
    assert not set(d.source.row_paths("train")) & set(d.source.row_paths("test"))
    assert d.source.record()["held_out_test"] and d.source.record()["test_fraction"] == 0.2
    again = read_folder(tmp_path / "f", FolderOptions(test_fraction=0.2))
    assert again.source.row_paths("test") == d.source.row_paths("test")
    other = read_folder(tmp_path / "f", FolderOptions(test_fraction=0.2, split_seed=3))
    assert other.source.row_paths("test") != d.source.row_paths("test")


def test_non_images_and_hidden_files_are_not_rows_and_jpeg_reads(tmp_path):
    data = make_dataset(n_train=6, n_test=3)
    write_folder(tmp_path / "f", data, suffix=".jpg")
    (tmp_path / "f" / "train" / "left" / "notes.txt").write_text("not an image")
    (tmp_path / "f" / "train" / "left" / ".hidden.png").write_bytes(b"junk")
    d = read_folder(tmp_path / "f")
    assert len(d.y_train) == 6 and len(d.source.paths) == 9
    # JPEG is lossy: the pixels are near, not equal.
    assert np.abs(d.x_train.astype(int) - expected_rows(d, data, {p: (p.split("/")[0], int(p[-8:-4]))
                                                                  for p in d.source.paths}, "train")).mean() < 8


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_image_is_named_or_skipped_and_counted(folder, damage):
    root, _, _ = folder
    bad = root / "train" / "middle" / sorted(os.listdir(root / "train" / "middle"))[0]
    if damage == "garbage":
        bad.write_bytes(b"this is no PNG")
    else:
        bad.write_bytes(bad.read_bytes()[:60])
    rel = bad.relative_to(root).as_posix()
    with pytest.raises(UsageError, match=rf"{bad}: not a readable image .*BAD_IMAGES=skip"):
        read_folder(root)
    d = read_folder(root, FolderOptions(bad_images="skip"))
    assert d.source.skipped == (rel,) and len(d.y_train) == 39
    assert rel not in d.source.row_paths("train")


def change(root, how: str) -> None:
    """The five ways a folder changes under its prepared file."""
    left = root / "train" / "left"
    first = left / sorted(os.listdir(left))[0]
    if how == "add":
        Image.new("L", (12, 12), 7).save(left / "new.png")
    elif how == "remove":
        first.unlink()
    elif how == "rename":
        first.rename(left / "renamed.png")
    elif how == "edit a pixel":
        pixels = np.asarray(Image.open(first)).copy()
        pixels[0, 0] ^= 1
        Image.fromarray(pixels).save(first)
    elif how == "reorder class folders":   # 'left' now sorts after 'middle': every label moves
        for split in ("train", "test"):
            (root / split / "left").rename(root / split / "z-left")


@pytest.mark.parametrize("how,words", [("add", "1 added (train/left/new.png)"), ("remove", "1 removed"),
                                       ("rename", "1 renamed"), ("edit a pixel", "1 edited"),
                                       ("reorder class folders", "renamed (test/left/")])
def test_every_change_to_the_folder_is_refused_in_one_line_and_keeps_the_prepared_file(folder, tmp_path, capsys,
                                                                                      how, words):
    root, _, _ = folder
    out = tmp_path / "data" / "shapes.npz"
    assert run_cli(["data", "--dataset", root, "--out", out], capsys)[0] == 0
    before, stamp = out.read_bytes(), out.stat().st_mtime_ns
    code, stdout, _ = run_cli(["data", "--dataset", root, "--out", out], capsys)   # unchanged: nothing rewritten
    assert code == 0 and "up to date" in stdout and out.stat().st_mtime_ns == stamp
    change(root, how)
    code, _, err = run_cli(["data", "--dataset", root, "--out", out], capsys)
    assert_one_line_error(code, err, f"{root} changed since {out} was prepared from it: ")
    assert words in err and f"delete {out}" in err
    assert out.read_bytes() == before and out.stat().st_mtime_ns == stamp
    assert changes(load_prepared(out).source, root)


def test_other_options_prepare_anew_instead_of_refusing(folder, tmp_path):
    root, _, _ = folder
    out = tmp_path / "shapes.npz"
    save_prepared(read_folder(root), out)
    assert prepared_folder_is_current(out, root, FolderOptions())
    assert not prepared_folder_is_current(out, root, FolderOptions(split_seed=1))
    assert not prepared_folder_is_current(out, root, FolderOptions(), limit=10)
    assert not prepared_folder_is_current(tmp_path / "missing.npz", root, FolderOptions())


def test_limit_keeps_the_rows_record_in_step(folder, tmp_path, capsys):
    root, data, where = folder
    out = tmp_path / "shapes-n10.npz"
    assert run_cli(["data", "--dataset", root, "--limit", "10", "--out", out], capsys)[0] == 0
    d = load_prepared(out)
    assert len(d.y_train) == 10 and len(d.source.row_paths("train")) == 10
    np.testing.assert_array_equal(d.x_train, expected_rows(d, data, where, "train"))
    assert len(set(d.y_train.tolist())) == 3        # shuffled rows: a small LIMIT still holds every class


def test_listing_refuses_what_is_no_image_folder(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(UsageError, match="needs train/<class>/ subfolders"):
        list_folder(tmp_path / "flat")
    data = make_dataset(n_train=30, n_test=2)
    write_folder(tmp_path / "f", data)
    (tmp_path / "f" / "test" / "unknown").mkdir()
    with pytest.raises(UsageError, match="test holds class folders that train/ has not: unknown"):
        list_folder(tmp_path / "f")
