"""SoftTargetDataset: the cache's targets in a user's own loop, the same ones the student stage trains on,
through DataLoader workers, and the guide's plain-PyTorch example run in a fresh interpreter."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.augment import DEFAULT_PAD, render_views
from pipeline.cache.reader import LogitCache
from pipeline.cache.soft_targets import SoftTargetDataset
from pipeline.config import LogitsConfig
from pipeline.data.prepare import load_prepared, save_prepared
from pipeline.errors import UsageError
from pipeline.teacher.logits_pass import write_teacher_logits
from tests.conftest import make_dataset

README = Path(__file__).resolve().parents[1] / "docs" / "GUIDE.md"   # the guide holds the tested examples


def test_items_are_the_images_and_the_caches_targets(cache_file, prepared):
    ds = SoftTargetDataset(cache_file, prepared, T=2.0)
    data, cache = load_prepared(prepared), LogitCache(cache_file)
    assert len(ds) == len(data.y_train)
    image, target, label = ds[5]
    assert torch.equal(image, torch.from_numpy(data.x_train[5]).float() / 255.0)
    assert torch.allclose(target, cache.soft_targets(2.0)[5]) and label == int(data.y_train[5])
    log_ds = SoftTargetDataset(cache_file, prepared, T=2.0, log_probs=True)
    assert torch.allclose(log_ds[5][1], cache.log_soft_targets(2.0)[5], atol=1e-6)
    test = SoftTargetDataset(cache_file, prepared, split="test")
    assert len(test) == len(data.y_test) and torch.allclose(test[0][1], cache.soft_targets(4.0, "test")[0])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_views_replay_exactly_what_the_teacher_scored(tmp_path, teacher_dir, prepared):
    cache = tmp_path / "views.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=cache, device="cpu",
                                      views=3, mixup=1.0), progress=False)
    ds = SoftTargetDataset(cache, prepared, T=1.0, views=True)
    c, data = LogitCache(cache), load_prepared(prepared)
    assert len(ds) == 3 * len(data.y_train)
    index = 3 * 7 + 2                                     # view 2 of image 7
    partner, weight = c.view_mix(3)
    expected = render_views(torch.from_numpy(data.x_train), torch.tensor([7]), c.view_params(3)[7, 2][None],
                            DEFAULT_PAD, partner[7, 2][None], weight[7, 2][None])[0]
    image, target, label = ds[index]
    assert torch.equal(image, expected.float() / 255.0) and label == int(data.y_train[7])
    assert torch.allclose(target, torch.softmax(torch.from_numpy(c.stored_logits("train_views", [index]))[0]
                                                * c.temperature, 0))


def test_a_cache_of_other_data_and_missing_views_are_refused(cache_file, tmp_path):
    other = tmp_path / "other.npz"
    save_prepared(make_dataset(seed=9), other)
    with pytest.raises(UsageError, match="different dataset"):
        SoftTargetDataset(cache_file, other)


def test_dataloader_workers_read_the_same_items(cache_file, prepared):
    ds = SoftTargetDataset(cache_file, prepared, T=4.0)
    torch.set_num_threads(1)                              # forked workers need it (see GUIDE: the cache)
    batches = list(DataLoader(ds, batch_size=32, num_workers=2, multiprocessing_context="fork"))
    images = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    assert torch.equal(images, torch.stack([ds[i][0] for i in range(len(ds))]))
    assert torch.allclose(targets, torch.stack([ds[i][1] for i in range(len(ds))]))


def test_the_readme_example_trains_a_student_in_a_fresh_interpreter(cache_file, prepared):
    code = re.search(r"<!-- own-loop-example -->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
    code = re.sub(r'CACHE = ".*"', f'CACHE = "{cache_file}"', code)
    code = re.sub(r'DATASET = ".*"', f'DATASET = "{prepared}"', code)
    code = re.sub(r"EPOCHS = \d+", "EPOCHS = 30", code)   # 96 images: one step an epoch
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=README.parents[1])
    assert proc.returncode == 0, proc.stderr
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.6, proc.stdout                     # 3 separable classes: chance is 0.33
    assert np.isfinite(accuracy)
