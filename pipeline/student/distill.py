"""Training a student from the cache and the images alone: the teacher is never loaded.

What the student sees and what it is matched against always belong together: the clean
image and its cached logits (the default), random crops and flips with the clean image's
logits (``augment``, where they stop matching), or cached views replayed with their own
logits (``replay``, see ``pipeline.augment``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline.augment import MIX_SCALE, ReplayedViews
from pipeline.cache.reader import CacheExpectations, LogitCache
from pipeline.config import StudentConfig, as_record
from pipeline.data.image_store import torch_images
from pipeline.data.label_subsets import labelled_rows, labels_record
from pipeline.data.prepare import holdout_split, load_prepared
from pipeline.data.transfer import load_transfer
from pipeline.errors import UsageError
from pipeline.files import exclusive_writer
from pipeline.losses import kd_loss_from_log_targets
from pipeline.models import count_params
from pipeline.names import TEACHER_CHECKPOINT, run_data
from pipeline.student.bank_fit import bank_fit
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.history import EpochLog
from pipeline.training.loop import Trainer, accuracy, predict, say_epoch, set_threads
from pipeline.training.resume import TrainingState, recipe_key
from pipeline.training.run_dir import build_student, evaluate, save_run

__all__ = ["train_student"]

# Test (and held-out) accuracy is scored after at most this many epochs of a run, evenly spread, and
# always after the last: a 1,000-epoch scratch run on 600 labels would otherwise spend most of its time
# scoring 10,000 test images after every 5-batch epoch.
SCORES_PER_RUN = 50


def _expected_teacher(record: Path | None) -> str | None:
    """The fingerprint of the teacher's weights as they are now: read from the checkpoint beside its record
    (and checked against those weights), never from the record, which a replaced teacher.pt leaves as it was."""
    if record is None:
        return None
    checkpoint = Path(record).with_name(TEACHER_CHECKPOINT)
    if not checkpoint.is_file():
        raise UsageError(f"teacher {checkpoint} is missing", fix="teacher")
    return load_checkpoint(checkpoint, "teacher", "teacher")[1]["fingerprint"]


def few_labels(cfg: StudentConfig, y_train: np.ndarray, num_classes: int, train_rows: np.ndarray,
               total_rows: int) -> torch.Tensor:
    """A (total_rows,) bool mask of the rows that keep their hard label: the LABELS=N subset of
    ``train_rows``, or all of them; never a held-out row nor a transfer row."""
    mask = torch.zeros(total_rows, dtype=torch.bool)
    rows = train_rows if cfg.labels is None else labelled_rows(y_train, train_rows, cfg.labels, cfg.seed,
                                                               num_classes)
    mask[torch.from_numpy(rows)] = True
    return mask


def _resume_key(cfg: StudentConfig, cache: LogitCache, data) -> dict:
    """What a saved training state must match to be continued: the recipe and what it reads, not where
    the files are, how many threads run it, or how often it is saved."""
    return recipe_key(as_record(cfg), ("cache", "dataset", "out_dir", "teacher_record", "transfer", "threads",
                                       "tensorboard_dir", "checkpoint_every", "checkpoint_minutes", "cache_memory_mb",
                                       "trust_undigested_cache"),
                      cache_fingerprint=cache.fingerprint, dataset_fingerprint=data.fingerprint)


def _transfer_images(cfg: StudentConfig, cache: LogitCache, image_shape: tuple) -> np.ndarray | None:
    """The transfer set's images, when the cache holds its logits; refused when the two disagree."""
    if cfg.transfer is None:
        if cache.transfer_rows:
            raise UsageError(f"cache {cfg.cache} also holds {cache.transfer_rows} transfer rows "
                             f"({cache.attrs.get('transfer')}); give their images with TRANSFER=<the .npz>",
                             fix_settings={"TRANSFER": f"{cache.attrs.get('transfer')}.npz"})
        return None
    transfer = load_transfer(cfg.transfer, image_shape)
    if not cache.transfer_rows:
        raise UsageError(f"cache {cfg.cache} holds no logits for the transfer set {cfg.transfer}; rebuild it with "
                         f"the transfer set", fix="teacher-logits", fix_settings={"TRANSFER": str(cfg.transfer)})
    if transfer.fingerprint != cache.attrs.get("transfer_fingerprint"):
        raise UsageError(f"cache {cfg.cache} was made from another transfer set than {cfg.transfer} (fingerprint "
                         f"{cache.attrs.get('transfer_fingerprint')}, expected {transfer.fingerprint}); rebuild it",
                         fix="teacher-logits", fix_settings={"TRANSFER": str(cfg.transfer)})
    return transfer.x


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
        memory_limit_bytes=cfg.cache_memory_mb << 20, combine=cfg.combine, trust_undigested=cfg.trust_undigested_cache)
    transfer = _transfer_images(cfg, cache, data.image_shape)
    labelled_count = len(data.y_train)
    if not np.array_equal(cache.labels("train")[:labelled_count], data.y_train):
        raise UsageError(f"cache {cfg.cache} labels differ from the dataset's", fix="teacher-logits")
    cache_seconds = time.perf_counter() - cache_start   # open, verify block by block, load

    model, model_kwargs = build_student(cfg.student, data, cfg.seed)
    # A transfer set joins the training images in memory; without one, on-disk images stay there.
    x = torch_images(data.x_train if transfer is None else np.concatenate([np.asarray(data.x_train), transfer]))
    y = torch.zeros(len(x), dtype=torch.int64)          # transfer rows: no label (masked out of the loss)
    y[:labelled_count] = torch.from_numpy(data.y_train)
    train_rows, held_rows = holdout_split(labelled_count, cfg.holdout)
    labelled = few_labels(cfg, data.y_train, data.num_classes, train_rows, len(x))
    some_unlabelled = cfg.labels is not None or transfer is not None   # the loss then weighs row by row
    if not cfg.holdout and not some_unlabelled:
        trainer_rows = len(y)
    elif cfg.alpha == 0:               # scratch sees only labelled rows
        trainer_rows = torch.from_numpy(np.flatnonzero(labelled.numpy()))
    else:                              # distilled: every training row, transfer rows included
        trainer_rows = torch.from_numpy(np.concatenate([train_rows, np.arange(labelled_count, len(x))]))
    trainer = Trainer(model, trainer_rows, epochs=cfg.epochs,
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

    def has_label(idx: torch.Tensor) -> torch.Tensor | None:
        """(B,) bool under LABELS=N or with a transfer set: a mixup view's blended label needs both rows'."""
        if not some_unlabelled:
            return None
        mixing = images.mixing(idx) if cfg.replay else None
        return labelled[idx] if mixing is None else labelled[idx] & labelled[mixing[0]]

    def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if cfg.alpha == 0:     # scratch: every row it trains on is labelled
            return torch.nn.functional.cross_entropy(logits, hard_labels(idx))
        labels = y[idx] if cfg.alpha == 1 else hard_labels(idx)   # KL only: the labels are not used
        return kd_loss_from_log_targets(logits, targets(idx), labels, T=cfg.T, alpha=cfg.alpha,
                                        labelled=has_label(idx), check_targets=False)   # the cache's log_softmax

    x_test, y_test = torch_images(data.x_test), torch.from_numpy(data.y_test)
    state = TrainingState(cfg.out_dir, _resume_key(cfg, cache, data), every=cfg.checkpoint_every or cfg.epochs,
                          minutes=cfg.checkpoint_minutes)
    history, _ = state.restore(trainer)          # [] unless a killed run of this very recipe left its state
    resumed_from = trainer.epochs_done
    score_every = max(1, cfg.epochs // SCORES_PER_RUN)
    with EpochLog(cfg.tensorboard_dir, cfg.out_dir.name) as log:
        while trainer.epochs_done < cfg.epochs:
            entry = trainer.train_epoch(images, loss_fn, f"student {cfg.student}", progress)
            epoch = trainer.epochs_done
            if epoch % score_every == 0 or epoch == cfg.epochs:
                test_logits = predict(model, x_test)
                entry["test_acc"] = accuracy(test_logits, y_test)
                if cfg.holdout:   # the score T/ALPHA/epochs are chosen by; the test split is not used for that
                    entry["val_acc"] = accuracy(predict(model, x[held_rows]), y[held_rows])
            history.append(entry)
            log.write(entry)
            say_epoch(f"student {cfg.student}", entry, cfg.epochs, progress)
            if cfg.checkpoint_every and state.due(epoch, cfg.epochs):
                state.save(trainer, history)
    seconds = [h["seconds"] for h in history]
    train_seconds = sum(seconds)     # training only, not the per-epoch scoring

    teacher_test = cache.logits("test")
    holdout = {"val_acc": history[-1]["val_acc"], "holdout": cfg.holdout} if cfg.holdout else {}
    # A replayed bank: the fit on its views against the cache's views it never trained on (overfitting to K).
    fit = (bank_fit(model, x, cache, torch.from_numpy(train_rows), y, cfg.replay, seed=cfg.seed,
                    pad=cache.attrs["view_pad"]) if cfg.replay else None)
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
        "bank_fit": fit,
        **labels_record(cfg.labels, np.flatnonzero(labelled.numpy()), y.numpy(), data.num_classes),
        "transfer": cache.attrs.get("transfer") if cache.transfer_rows and cfg.alpha > 0 else None,
        "transfer_rows": cache.transfer_rows if cfg.alpha > 0 else 0,    # scratch never sees them
        "seconds_per_epoch": sum(seconds) / len(seconds),
        "resumed_from_epoch": resumed_from,
        "train_rows": trainer_rows if isinstance(trainer_rows, int) else len(trainer_rows),   # images per epoch
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
    state.clear()
    return metrics
