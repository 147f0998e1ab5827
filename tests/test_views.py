"""Cached augmented views: stored exactly, rebuilt bit-for-bit, replayed with their own logits."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.augment import (
    ReplayedViews,
    apply_views,
    draw_view_params,
    random_view_params,
)
from pipeline.cache.format import VIEW_SPLIT
from pipeline.cache.reader import LogitCache
from pipeline.config import LogitsConfig, StudentConfig
from pipeline.data.prepare import holdout_split
from pipeline.errors import UsageError
from pipeline.student.distill import train_student
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.teacher.source import load_teacher
from pipeline.training.loop import augment_batch, predict

K = 3


@pytest.fixture
def views_cache(tmp_path, prepared, teacher_dir) -> Path:
    out = tmp_path / "cache" / "tiny-v3.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=out, device="cpu",
                                      views=K, view_seed=7, chunk_rows=50))
    return out


def test_apply_views_crops_the_padded_image_and_mirrors():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4) + 1
    identity = apply_views(x, torch.tensor([[1, 1, 0]]), pad=1)
    assert torch.equal(identity, x)
    down_right = apply_views(x, torch.tensor([[0, 0, 0]]), pad=1)[0, 0]   # the window starts in the padding
    assert torch.equal(down_right[0], torch.zeros(4, dtype=torch.uint8))
    assert torch.equal(down_right[1:, 1:], x[0, 0, :3, :3]) and down_right[1:, 0].eq(0).all()
    mirrored = apply_views(x, torch.tensor([[1, 1, 1]]), pad=1)
    assert torch.equal(mirrored, x.flip(-1))


def test_random_augmentation_is_apply_views_of_random_params():
    x = torch.rand(6, 1, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = apply_views(x, random_view_params(6, torch.Generator().manual_seed(3)))
    assert torch.equal(a, b)


def test_view_params_are_fixed_by_their_seed_and_in_range():
    a, b, c = draw_view_params(50, 4, seed=1), draw_view_params(50, 4, seed=1), draw_view_params(50, 4, seed=2)
    assert a.shape == (200, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[:, :2].max() == 4 and a[:, :2].min() == 0 and set(np.unique(a[:, 2])) == {0, 1}


def test_each_cached_view_holds_the_teachers_logits_for_exactly_that_view(views_cache, tiny_dataset, teacher_dir):
    cache = LogitCache(views_cache)
    n = len(tiny_dataset.y_train)
    assert cache.views == K and cache.rows(VIEW_SPLIT) == n * K
    params = cache.view_params()
    assert params.shape == (n, K, 3)
    assert np.array_equal(params.reshape(-1, 3).numpy(), draw_view_params(n, K, seed=7))   # rebuildable from the seed
    teacher = load_teacher(teacher_dir / "teacher.pt").model
    x = torch.from_numpy(tiny_dataset.x_train)
    for j in range(K):
        seen = predict(teacher, apply_views(x, params[:, j]))
        stored = cache.logits(VIEW_SPLIT)[torch.arange(n) * K + j]
        torch.testing.assert_close(stored, seen, rtol=0, atol=1e-5)
    assert np.array_equal(cache.labels(VIEW_SPLIT), np.repeat(tiny_dataset.y_train, K))
    # and the views are not the clean image: at least some logits differ from the clean ones
    assert not torch.allclose(cache.logits(VIEW_SPLIT)[::K], cache.logits("train"))


def test_rebuilding_gives_the_same_views_and_logits(tmp_path, prepared, teacher_dir, views_cache):
    again = tmp_path / "again.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=again,
                                      device="cpu", views=K, view_seed=7, chunk_rows=17))
    with h5py.File(views_cache) as a, h5py.File(again) as b:
        for name in a[VIEW_SPLIT]:
            assert np.array_equal(a[VIEW_SPLIT][name][()], b[VIEW_SPLIT][name][()]), name
        assert (a.attrs["views"], a.attrs["view_seed"], a.attrs["view_pad"]) == (K, 7, 2)


def test_replay_shows_every_view_once_per_k_epochs_and_targets_match_the_input(views_cache, tiny_dataset,
                                                                             teacher_dir):
    cache = LogitCache(views_cache)
    epoch = {"now": 0}
    x = torch.from_numpy(tiny_dataset.x_train)
    replay = ReplayedViews(x, cache.view_params(), seed=0, epoch=lambda: epoch["now"])
    rows = torch.arange(len(x))
    seen = []
    for e in range(K):
        epoch["now"] = e
        seen.append(replay.choice(rows))
    assert torch.equal(torch.stack(seen).sort(dim=0).values, torch.arange(K)[:, None].expand(K, len(x)))
    # What the student sees and the target it is matched with belong to the same view.
    teacher = load_teacher(teacher_dir / "teacher.pt").model
    batch = torch.tensor([5, 0, 17, 3])
    epoch["now"] = 1
    targets = cache.batch_view_log_soft_targets(batch, replay.choice(batch), T=2.0)
    expected = torch.log_softmax(predict(teacher, replay[batch]) / 2.0, dim=-1)
    torch.testing.assert_close(targets, expected, rtol=0, atol=1e-5)


def test_student_replays_views_and_records_what_it_saw(tmp_path, prepared, views_cache):
    cfg = StudentConfig(cache=views_cache, dataset=prepared, out_dir=tmp_path / "runs" / "r", epochs=2,
                        batch_size=16, replay=2, alpha=0.5, T=2.0)
    m = train_student(cfg, progress=False)
    assert m["inputs"] == "2 cached views" and m["replay"] == 2 and cfg.run_name == "cnn-tiny-T2-a0.5-r2-s0-e2-on-tiny"
    again = train_student(cfg, progress=False)
    assert again["test_acc"] == m["test_acc"]     # replay is seeded like everything else


def test_replay_errors_name_the_fix(tmp_path, prepared, views_cache, cache_file):
    def run(cache, **kw):
        return train_student(StudentConfig(cache=cache, dataset=prepared, out_dir=tmp_path / "r", epochs=1,
                                           batch_size=16, **kw), progress=False)

    with pytest.raises(UsageError, match=r"holds 3 views per image, so REPLAY=4 cannot be replayed; use REPLAY <= 3"):
        run(views_cache, replay=4)
    with pytest.raises(UsageError, match=r"holds no augmented views.*LogitsConfig\(\.\.\., views=2\)"):
        run(cache_file, replay=2)
    with pytest.raises(UsageError, match="AUGMENT=1 with REPLAY>0"):
        StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path, replay=2, augment=True)
    assert not (tmp_path / "r").exists()
    cli = subprocess.run([sys.executable, "-m", "stages.cli", "student", "--cache", str(views_cache), "--dataset",
                          str(prepared), "--out-dir", str(tmp_path / "r"), "--replay", "9"],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and "REPLAY <= 3" in cli.stderr


@pytest.mark.parametrize("defect,match", [
    (lambda f: f[VIEW_SPLIT]["params"].__setitem__((0, 0), 9), "outside the 2-pixel crop"),
    (lambda f: f[VIEW_SPLIT]["index"].__setitem__(4, 0), "not in dataset order"),
    (lambda f: f.attrs.__setitem__("views", 4), "not 4 views"),
])
def test_broken_view_splits_are_refused(tmp_path, views_cache, defect, match):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(views_cache.read_bytes())
    with h5py.File(broken, "r+") as f:
        defect(f)
    with pytest.raises(UsageError, match=match):
        LogitCache(broken)


def test_holdout_split_is_fixed_disjoint_and_complete():
    train, held = holdout_split(100, 10)
    assert len(held) == 10 and len(train) == 90 and not set(train) & set(held)
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(100))
    assert np.array_equal(held, holdout_split(100, 10)[1])
    with pytest.raises(UsageError, match="HOLDOUT=100 must lie in"):
        holdout_split(100, 100)


def test_holdout_run_scores_the_rows_it_did_not_train_on(tmp_path, prepared, cache_file):
    cfg = StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path / "r", epochs=2, batch_size=16,
                        holdout=24, augment=True, alpha=0.0)
    m = train_student(cfg, progress=False)
    assert m["holdout"] == 24 and 0 <= m["val_acc"] <= 1 and m["inputs"] == "crop+flip"
    assert cfg.run_name == "cnn-tiny-scratch-aug-ho24-s0-e2-on-tiny"
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["val_acc"] == m["val_acc"]


def test_views_experiment_tunes_on_held_out_rows_then_reports_every_arm(tmp_path, prepared, views_cache):
    from pipeline.config import ViewsExperimentConfig
    from pipeline.experiments.views import (
        experiment_report,
        run_count,
        run_views_experiment,
    )

    template = StudentConfig(cache=views_cache, dataset=prepared, out_dir=tmp_path, epochs=1, batch_size=16)
    cfg = ViewsExperimentConfig(student=template, runs_dir=tmp_path / "runs", tuning_dir=tmp_path / "tuning",
                                reports_dir=tmp_path / "reports", students=("cnn-tiny",), Ts=(1.0, 4.0),
                                alphas=(0.0, 0.5), seeds=(0, 1), tune_seeds=(0,), holdout=24, replay=2, threads=1)
    assert cfg.alphas == (0.5,) and run_count(cfg) == 1 * (1 + 2 * 2) + 3 * 2
    seen = []
    record = run_views_experiment(cfg, on_result=seen.append)
    assert len(seen) == run_count(cfg) and all(r["status"] == "trained" for r in seen)
    tuned = [json.loads(p.read_text()) for p in (tmp_path / "tuning").glob("*/metrics.json")]
    assert len(tuned) == 5 and all(m["holdout"] == 24 for m in tuned)
    for chosen in record["chosen"]:     # the chosen (T, ALPHA) is the best held-out score of its arm
        arm = [m for m in tuned if m["alpha"] > 0 and bool(m["replay"]) == (chosen["arm"] == "replay")]
        assert chosen["val_acc"] == max(m["val_acc"] for m in arm)
        assert any((m["T"], m["alpha"], m["val_acc"]) == (chosen["T"], chosen["alpha"], chosen["val_acc"]) for m in arm)
    final = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(final) == 6 and all("-ho" not in name for name in final)
    assert sum("-r2-" in name for name in final) == 2 and sum("scratch-aug" in name for name in final) == 2
    arms = {r["arm"]: r for r in record["arms"]}
    assert arms["replay"]["cache_bytes"] > arms["clean"]["cache_bytes"] > 0 == arms["scratch"]["cache_bytes"]
    assert arms["replay"]["teacher_seconds"] > arms["clean"]["teacher_seconds"] > 0
    text = experiment_report(tmp_path / "reports").read_text()
    assert "| cnn-tiny |" in text and "2 cached views" in text and "**" in text
    # Run again: every run is already finished from this cache, so nothing trains.
    again = []
    run_views_experiment(cfg, on_result=again.append)
    assert all(r["status"] == "skipped" for r in again)


def test_experiment_needs_a_cache_with_enough_views(tmp_path, prepared, cache_file, views_cache):
    from pipeline.config import ViewsExperimentConfig
    from pipeline.experiments.views import run_views_experiment

    def cfg(cache, replay=0):
        return ViewsExperimentConfig(student=StudentConfig(cache=cache, dataset=prepared, out_dir=tmp_path),
                                     runs_dir=tmp_path / "runs", tuning_dir=tmp_path / "t", reports_dir=tmp_path,
                                     holdout=24, replay=replay)

    with pytest.raises(UsageError, match=r"no augmented views .*; call pipeline\.experiments\.views\.run_views_experiment\(ViewsExperimentConfig\(\.\.\., views=8\)\)"):
        run_views_experiment(cfg(cache_file))
    with pytest.raises(UsageError, match="REPLAY <= 3"):
        run_views_experiment(cfg(views_cache, replay=5))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "t").exists()
