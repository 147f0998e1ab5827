"""A folder of real Fashion-MNIST PNGs through the whole pipeline with the same make commands:
its cache and its student equal the .npz path's for the same images, an unchanged rerun
recomputes nothing, and a changed file stops make in one line with nothing replaced."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cache.soft_targets import SoftTargetDataset
from pipeline.data.prepare import DEBIAN_DIR, load_idx_dir, load_prepared
from tests.test_make import fingerprint, make
from tests.test_resume import _same, _weights

pytestmark = pytest.mark.slow
TRAIN, TEST = 1200, 300


def png_folder(root, x, y, names, split):
    for i, (image, label) in enumerate(zip(x, y)):
        path = root / split / names[label].replace("/", "-") / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(path)


def test_a_png_folder_gives_the_npz_paths_cache_and_student(tmp_path):
    real = load_idx_dir(DEBIAN_DIR)
    folder = tmp_path / "fmnist"
    png_folder(folder, real.x_train[:TRAIN], real.y_train[:TRAIN], real.class_names, "train")
    png_folder(folder, real.x_test[:TEST], real.y_test[:TEST], real.class_names, "test")
    common = ["TEACHER_EPOCHS=1", "EPOCHS=1", "STUDENT=cnn-tiny", "T=4", "ALPHA=0.5", "DEVICE=cpu", "THREADS=1"]
    from_folder = make("student", f"DATASET={folder}", f"DATA_DIR={tmp_path}/a", *common)
    assert "softcache teacher-logits" in from_folder.stdout

    # The same images, in the prepared rows' order, as an .npz of the same name (read whole into memory).
    d = load_prepared(tmp_path / "a" / "dataset" / "fmnist.h5")
    index = {"train": real.x_train, "test": real.x_test}
    rows = {s: np.stack([index[s][int(p.split("/")[-1][:5])] for p in d.source.row_paths(s)]) for s in index}
    np.testing.assert_array_equal(d.x_train, rows["train"])        # PNG is lossless: every pixel as it was
    class_names = [n.replace("/", "-") for n in real.class_names]
    np.savez(tmp_path / "fmnist.npz", x_train=rows["train"], y_train=d.y_train, x_test=rows["test"], y_test=d.y_test,
             class_names=np.array(class_names))
    make("student", f"DATASET={tmp_path}/fmnist.npz", f"DATA_DIR={tmp_path}/b", *common)

    cache = "cache/fmnist-e1-T1-float32.h5"
    with h5py.File(tmp_path / "a" / cache) as a, h5py.File(tmp_path / "b" / cache) as b:
        for split in ("train", "test"):
            np.testing.assert_allclose(a[f"{split}/logits"][:], b[f"{split}/logits"][:], rtol=0, atol=1e-6)
        source = json.loads(a.attrs["dataset_source"])
        assert source["files"] == TRAIN + TEST and "dataset_source" not in b.attrs
    own_loop = SoftTargetDataset(tmp_path / "a" / cache, tmp_path / "a" / "dataset" / "fmnist.h5", T=4.0)
    image, _, label = own_loop[7]                  # row 7 is the file its path names, with that file's label
    path = own_loop.paths[7]
    assert torch.equal(image, torch.from_numpy(np.asarray(Image.open(folder / path), dtype=np.float32)[None] / 255))
    assert own_loop.class_names[label] == path.split("/")[1]
    run = "runs/cnn-tiny-T4-a0.5-from-e1-s0-e1-on-fmnist/metrics.json"
    metrics = [json.loads((tmp_path / side / run).read_text()) for side in ("a", "b")]
    assert metrics[0]["test_acc"] == metrics[1]["test_acc"] > 0.2   # chance: 0.1
    # Read from disk a batch at a time, the student is bit for bit the one trained in memory.
    assert _same(_weights(tmp_path / "a" / Path(run).parent), _weights(tmp_path / "b" / Path(run).parent))

    # Unchanged: the folder is checked, nothing downstream runs again.
    before = fingerprint(tmp_path / "a" / cache), fingerprint(tmp_path / "a" / "dataset" / "fmnist.h5")
    again = make("student", f"DATASET={folder}", f"DATA_DIR={tmp_path}/a", *common)
    assert "up to date with" in again.stdout
    assert "softcache teacher" not in again.stdout and "softcache student" not in again.stdout
    assert (fingerprint(tmp_path / "a" / cache), fingerprint(tmp_path / "a" / "dataset" / "fmnist.h5")) == before

    # A sweep, the report and the export read the folder's dataset like any other.
    sweep = make("sweep", f"DATASET={folder}", f"DATA_DIR={tmp_path}/a", "STUDENTS=mlp", "TS=4", "ALPHAS=0", *common)
    assert "1 runs: 1 trained" in sweep.stdout
    make("report", f"DATASET={folder}", f"DATA_DIR={tmp_path}/a", *common)
    assert "cnn-tiny on fmnist" in (tmp_path / "a" / "reports" / "report.md").read_text()
    make("export", f"DATASET={folder}", f"DATA_DIR={tmp_path}/a", "FORMATS=onnx", *common)
    exported = json.loads((tmp_path / "a" / run.replace("metrics.json", "export/export.json")).read_text())
    assert "onnx" in exported["files"] and abs(exported["test_acc"]["onnx"] - exported["test_acc"]["eager"]) < 0.01

    # One edited pixel: make stops in one line, and nothing made from the folder is replaced.
    edited = sorted((folder / "train" / "Bag").iterdir())[0]
    pixels = np.asarray(Image.open(edited)).copy()
    pixels[5, 5] ^= 1
    Image.fromarray(pixels).save(edited)
    refused = make("student", f"DATASET={folder}", f"DATA_DIR={tmp_path}/a", *common, check=False)
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("softcache")]
    assert len(errors) == 1 and f"1 edited (train/Bag/{edited.name})" in errors[0] and "make data" in errors[0]
    assert (fingerprint(tmp_path / "a" / cache), fingerprint(tmp_path / "a" / "dataset" / "fmnist.h5")) == before
