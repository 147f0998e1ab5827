"""PS-KD: the alpha schedule, the target mixture, per-epoch caches and resume equivalence."""

import subprocess
import sys

import pytest
import torch

from pipeline.cache.reader import LogitCache
from pipeline.config import SelfDistillConfig
from pipeline.errors import UsageError
from pipeline.student.self_distill import (
    PREDICTIONS_FILE,
    alpha_schedule,
    pskd_targets,
    resume_dir,
    self_distill,
)
from pipeline.training.checkpoint import load_checkpoint, model_fingerprint


def test_alpha_grows_linearly_to_alpha_T_at_the_last_epoch():
    assert [alpha_schedule(0.8, t, 4) for t in range(1, 5)] == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_targets_mix_the_label_with_the_previous_predictions():
    labels = torch.tensor([0, 2])
    previous = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    mixed = pskd_targets(labels, previous, 0.25, 3)
    assert torch.allclose(mixed, torch.tensor([[0.875, 0.075, 0.05], [0.025, 0.025, 0.95]]))
    assert torch.allclose(mixed.sum(1), torch.ones(2))
    assert torch.equal(pskd_targets(labels, None, 0.25, 3), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))


def config(tmp_path, prepared, **kw):
    return SelfDistillConfig(dataset=prepared, out_dir=tmp_path / "runs" / "cnn-tiny-pskd-a0.8-s0-e3",
                             epochs=3, batch_size=16, threads=1, **kw)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, prepared):
    whole = self_distill(config(tmp_path / "a", prepared), progress=False)
    out_a = tmp_path / "a" / "runs" / "cnn-tiny-pskd-a0.8-s0-e3"

    def die_after_epoch_2(epoch, figures):
        if epoch == 2:
            raise KeyboardInterrupt   # what Ctrl-C or a kill between epochs leaves behind
    cfg_b = config(tmp_path / "b", prepared)
    with pytest.raises(KeyboardInterrupt):
        self_distill(cfg_b, progress=False, on_epoch=die_after_epoch_2)
    assert not cfg_b.out_dir.exists() and (resume_dir(cfg_b.out_dir) / "state.pt").is_file()

    resumed = self_distill(cfg_b, progress=False)
    assert resumed["resumed_from_epoch"] == 2 and whole["resumed_from_epoch"] == 0
    assert resumed["test_acc"] == whole["test_acc"] and resumed["ece"] == whole["ece"]
    model_a, _ = load_checkpoint(out_a / "model.pt", "student", "student")
    model_b, _ = load_checkpoint(cfg_b.out_dir / "model.pt", "student", "student")
    assert model_fingerprint("cnn-tiny", model_a) == model_fingerprint("cnn-tiny", model_b)
    assert not resume_dir(cfg_b.out_dir).exists()


def test_each_epoch_predictions_are_a_cache_in_the_standard_format(tmp_path, prepared, tiny_dataset):
    seen = []
    cfg = config(tmp_path, prepared, alpha_T=0.6)
    m = self_distill(cfg, progress=False, on_epoch=lambda e, f: seen.append((e, f["alpha_t"])))
    assert seen == [(1, pytest.approx(0.2)), (2, pytest.approx(0.4)), (3, pytest.approx(0.6))]
    cache = LogitCache(cfg.out_dir / PREDICTIONS_FILE)
    assert cache.attrs["producer"] == "softcache self-distill" and int(cache.attrs["epoch"]) == 3
    assert cache.train_rows == len(tiny_dataset.y_train)
    assert cache.teacher_accuracy("test") == pytest.approx(m["test_acc"])
    assert m["method"] == "ps-kd" and 0 <= m["ece"] <= 1


@pytest.mark.parametrize("kw,match", [({"alpha_T": 0.0}, r"ALPHA_T must be a number in \(0, 1\]"),
                                      ({"alpha_T": 1.5}, "ALPHA_T"), ({"student": "vit"}, "unknown student"),
                                      ({"epochs": 0}, "EPOCHS")])
def test_bad_settings_are_refused(tmp_path, kw, match):
    with pytest.raises(UsageError, match=match):
        SelfDistillConfig(dataset=tmp_path, out_dir=tmp_path, **kw)


def test_cli_bad_alpha_is_one_line_exit_2(tmp_path, prepared):
    proc = subprocess.run([sys.executable, "-m", "stages.cli", "self-distill", "--dataset", str(prepared),
                           "--out-dir", str(tmp_path / "r"), "--alpha-T", "2"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "ALPHA_T" in proc.stderr


@pytest.mark.slow
def test_sigkill_mid_run_then_same_command_matches_uninterrupted(tmp_path):
    """A real kill -9 of the CLI in the middle of training, then the same command again."""
    import json
    import os
    import signal
    import time

    from pipeline.data.prepare import save_prepared
    from tests.conftest import make_dataset

    prepared = tmp_path / "d.npz"
    save_prepared(make_dataset(n_train=2000, n_test=200), prepared)
    cfg = dict(epochs=12, batch_size=16, threads=1, student="cnn-tiny")
    whole = self_distill(SelfDistillConfig(dataset=prepared, out_dir=tmp_path / "whole", **cfg), progress=False)

    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "stages.cli", "self-distill", "--dataset", str(prepared), "--out-dir", str(out),
            "--epochs", "12", "--batch-size", "16", "--threads", "1", "--student", "cnn-tiny"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = resume_dir(out) / "state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)                                  # into the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"

    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert 1 <= metrics["resumed_from_epoch"] < 12 and "resumed after epoch" in done.stdout
    assert metrics["test_acc"] == whole["test_acc"] and metrics["ece"] == whole["ece"]
    a, _ = load_checkpoint(tmp_path / "whole" / "model.pt", "student", "student")
    b, _ = load_checkpoint(out / "model.pt", "student", "student")
    assert model_fingerprint("cnn-tiny", a) == model_fingerprint("cnn-tiny", b)
