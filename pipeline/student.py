"""Training a student from the cache and the images alone: the teacher is never loaded.

What the student sees and what it is matched against always belong together: the clean
image and its cached logits (the default), random crops and flips with the clean image's
logits (``augment``, where they stop matching), or cached views replayed with their own
logits (``replay``, see ``pipeline.views``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline.cache import CacheExpectations, LogitCache
from pipeline.config import StudentConfig, as_record
from pipeline.datasets import holdout_split, load_prepared
from pipeline.errors import UsageError
from pipeline.files import exclusive_writer, read_json
from pipeline.history import EpochLog
from pipeline.losses import kd_loss_from_log_targets
from pipeline.models import count_params
from pipeline.names import run_data
from pipeline.runs import build_student, evaluate, save_run
from pipeline.train import Trainer, accuracy, predict, say_epoch, set_threads
from pipeline.views import MIX_SCALE, ReplayedViews

__all__ = ["train_student"]


def _expected_teacher(record: Path | None) -> str | None:
    if record is None:
        return None
    try:
        return read_json(record)["fingerprint"]
    except (OSError, ValueError, KeyError):
        raise UsageError(f"teacher record {record} is missing or unreadable", fix="teacher") from None


def train_student(cfg: StudentConfig, progress: bool = True) -> dict:
    """Train one student on the CPU, evaluate it, and write its run directory; return metrics.
    A second writer of the same run directory is refused while one trains."""
    with exclusive_writer(cfg.out_dir, what="student run"):
        return _train_student(cfg, progress)


def _train_student(cfg: StudentConfig, progress: bool) -> dict:
    set_threads(cfg.threads)
    data = load_prepared(cfg.dataset)
    cache_start = time.perf_counter()
    cache = LogitCache(cfg.cache, CacheExpectations(
        dataset_fingerprint=data.fingerprint, teacher_fingerprint=_expected_teacher(cfg.teacher_record),
        num_classes=data.num_classes, train_rows=len(data.y_train)),
        memory_limit_bytes=cfg.cache_memory_mb << 20, combine=cfg.combine)
    if not np.array_equal(cache.labels("train"), data.y_train):
        raise UsageError(f"cache {cfg.cache} labels differ from the dataset's", fix="teacher-logits")
    cache_seconds = time.perf_counter() - cache_start   # open, verify block by block, load

    model, model_kwargs = build_student(cfg.student, data, cfg.seed)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    train_rows, held_rows = holdout_split(len(y), cfg.holdout)
    trainer = Trainer(model, torch.from_numpy(train_rows) if cfg.holdout else len(y), epochs=cfg.epochs,
                      batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                      augment=cfg.augment)
    if cfg.replay:
        images = ReplayedViews(x, cache.view_params(cfg.replay), seed=cfg.seed, epoch=lambda: trainer.epochs_done,
                               pad=cache.attrs["view_pad"], mix=cache.view_mix(cfg.replay))

        def targets(idx: torch.Tensor) -> torch.Tensor:
            return cache.batch_view_log_soft_targets(idx, images.choice(idx), cfg.T)
    else:
        images = x

        def targets(idx: torch.Tensor) -> torch.Tensor:
            return cache.batch_log_soft_targets(idx, cfg.T)

    def hard_labels(idx: torch.Tensor) -> torch.Tensor:
        """Class indices, or for mixup views the blend lambda * onehot(y_i) + (1 - lambda) * onehot(y_j)."""
        mixing = images.mixing(idx) if cfg.replay else None
        if mixing is None:
            return y[idx]
        partner, weight = mixing
        lam = (weight.float() / MIX_SCALE)[:, None]
        onehot = torch.nn.functional.one_hot
        return lam * onehot(y[idx], data.num_classes) + (1 - lam) * onehot(y[partner], data.num_classes)

    def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        labels = y[idx] if cfg.alpha == 1 else hard_labels(idx)   # KL only: the labels are not used
        return kd_loss_from_log_targets(logits, targets(idx), labels, T=cfg.T, alpha=cfg.alpha)

    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    history = []
    with EpochLog(cfg.tensorboard_dir, cfg.out_dir.name) as log:
        for _ in range(cfg.epochs):
            entry = trainer.train_epoch(images, loss_fn, f"student {cfg.student}", progress)
            test_logits = predict(model, x_test)
            entry["test_acc"] = accuracy(test_logits, y_test)
            if cfg.holdout:   # the score T/ALPHA/epochs are chosen by; the test split is not looked at for that
                entry["val_acc"] = accuracy(predict(model, x[held_rows]), y[held_rows])
            history.append(entry)
            log.write(entry)
            say_epoch(f"student {cfg.student}", entry, cfg.epochs, progress)
    seconds = [h["seconds"] for h in history]
    train_seconds = sum(seconds)     # training only, not the per-epoch scoring

    teacher_test = cache.logits("test")
    holdout = {"val_acc": history[-1]["val_acc"], "holdout": cfg.holdout} if cfg.holdout else {}
    metrics = {
        **evaluate(test_logits, data),
        **holdout,
        "teacher_test_acc": cache.teacher_accuracy("test"),
        "teacher": cache.attrs.get("teacher"),
        "teacher_tag": cfg.teacher_tag,
        "teacher_members": cache.members,
        "combine": cfg.combine,
        "published": bool(cache.attrs.get("published", False)),
        "mixup": cache.mixup if cfg.replay else 0.0,
        "agreement_with_teacher": float((test_logits.argmax(1) == teacher_test.argmax(1)).float().mean()),
        "params": count_params(model),
        "student": cfg.student,
        "data": run_data(cfg.dataset),
        "T": cfg.T,
        "alpha": cfg.alpha,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "inputs": cfg.inputs,
        "replay": cfg.replay,
        "seconds_per_epoch": sum(seconds) / len(seconds),
        "train_seconds": train_seconds,
        "cache_seconds": cache_seconds,
        "history": history,
        "threads": torch.get_num_threads(),
        "cache_fingerprint": cache.fingerprint,
        "cache_in_memory": cache.in_memory,
        "teacher_fingerprint": cache.attrs.get("teacher_fingerprint"),
        "dataset_fingerprint": data.fingerprint,
        "config": as_record(cfg),
    }
    save_run(cfg.out_dir, cfg.student, model, model_kwargs, as_record(cfg), metrics)
    return metrics
