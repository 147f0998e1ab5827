"""Progressive self-knowledge distillation (PS-KD; Kim et al., ICCV 2021): no teacher.

At epoch t of E the target is the hard label mixed with the model's own predictions from
the end of epoch t-1,

    target_t = (1 - alpha_t) * onehot(y) + alpha_t * softmax(z_{t-1}),   alpha_t = ALPHA_T * t / E,

and the loss is cross-entropy against that soft target. The first epoch has no earlier
predictions and trains on the hard labels. The "teacher" is the previous epoch, so its
predictions are a cache like any other: after every epoch the model scores the clean
training and test images and the logits go to an HDF5 file in the cache format
(``softcache inspect`` reads it), which the next epoch reads its targets from.

Unlike the reference implementation, which reuses the outputs recorded during the previous
epoch's training pass (augmented images, weights changing mid-epoch), the targets here
are the end-of-epoch model on the clean images: the same network for every row, and a
file that can be inspected and resumed from.

Resumable per epoch: the trainer's whole state (weights, optimiser, schedule, random
stream) and that epoch's predictions are saved in ``.<run>.resume/`` after every epoch,
so a killed run continues from the last finished epoch and ends, on the CPU with the
same threads, exactly where an uninterrupted run ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.cache.format import write_cache
from pipeline.cache.reader import CacheExpectations, LogitCache
from pipeline.config import SelfDistillConfig, as_record
from pipeline.data.image_store import torch_images
from pipeline.data.prepare import Dataset, load_prepared
from pipeline.files import exclusive_writer
from pipeline.models import count_params
from pipeline.names import run_data
from pipeline.training.checkpoint import model_fingerprint
from pipeline.training.history import EpochLog
from pipeline.training.loop import Trainer, accuracy, predict, set_threads
from pipeline.training.resume import TrainingState, recipe_key, resume_dir
from pipeline.training.run_dir import build_student, evaluate, save_run

__all__ = ["alpha_schedule", "pskd_targets", "self_distill", "resume_dir", "PREDICTIONS_FILE"]

PREDICTIONS_FILE = "predictions.h5"


def alpha_schedule(alpha_T: float, epoch: int, epochs: int) -> float:
    """alpha_t for epoch t in 1..epochs: grows linearly to alpha_T at the last epoch."""
    return alpha_T * epoch / epochs


def pskd_targets(labels: torch.Tensor, previous_probs: torch.Tensor | None, alpha: float,
                 num_classes: int) -> torch.Tensor:
    """(1 - alpha) * onehot(labels) + alpha * previous_probs; the one-hot labels when there is no previous epoch."""
    onehot = F.one_hot(labels, num_classes).float()
    return onehot if previous_probs is None else (1.0 - alpha) * onehot + alpha * previous_probs


def _predictions_path(work: Path, epoch: int) -> Path:
    return work / f"predictions-e{epoch:03d}.h5"


def _write_predictions(path: Path, model: torch.nn.Module, arch: str, data: Dataset, train_logits: torch.Tensor,
                       test_logits: torch.Tensor, epoch: int, alpha: float) -> None:
    attrs = {
        "teacher": f"self:{arch}@epoch{epoch}",
        "teacher_fingerprint": model_fingerprint(arch, model),
        "dataset_fingerprint": data.fingerprint,
        "dataset": data.name,
        "teacher_test_acc": accuracy(test_logits, torch.from_numpy(data.y_test)),
        "producer": "softcache self-distill",
        "device": "cpu",
        "class_names": list(data.class_names),
        "epoch": epoch,
        "alpha_t": alpha,
    }
    with write_cache(path, rows={"train": len(data.y_train), "test": len(data.y_test)},
                     num_classes=data.num_classes, temperature=1.0, attrs=attrs) as writer:
        for split, logits, labels in (("train", train_logits, data.y_train), ("test", test_logits, data.y_test)):
            writer.write(split, 0, logits.numpy(), labels, np.arange(len(labels)))


def _previous_probs(work: Path, epoch: int, data: Dataset) -> torch.Tensor | None:
    """softmax of the logits cached at the end of ``epoch`` (None before the first epoch)."""
    if epoch == 0:
        return None
    cache = LogitCache(_predictions_path(work, epoch), CacheExpectations(
        dataset_fingerprint=data.fingerprint, num_classes=data.num_classes, train_rows=len(data.y_train)))
    return torch.softmax(cache.logits("train"), dim=1)


def _resume_key(cfg: SelfDistillConfig, data: Dataset) -> dict:
    """What a saved state must match to be continued: everything but threads and paths."""
    return recipe_key(as_record(cfg), ("out_dir", "threads", "dataset"), dataset_fingerprint=data.fingerprint)


def self_distill(cfg: SelfDistillConfig, progress: bool = True,
                 on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train one student with PS-KD (resuming a killed run), write its run directory, return metrics.

    ``on_epoch(epoch, figures)`` is called after each epoch's state is safely saved.
    """
    set_threads(cfg.threads)
    data = load_prepared(cfg.dataset)
    model, model_kwargs = build_student(cfg.student, data, cfg.seed)
    trainer = Trainer(model, len(data.y_train), epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, seed=cfg.seed, augment=cfg.augment)
    x, y = torch_images(data.x_train), torch.from_numpy(data.y_train)
    x_test = torch_images(data.x_test)

    with exclusive_writer(cfg.out_dir, what="self-distillation run"):
        state = TrainingState(cfg.out_dir, _resume_key(cfg, data))
        history, _ = state.restore(trainer)
        work = state.dir                 # the previous epoch's predictions live beside the state
        resumed_from = trainer.epochs_done
        with EpochLog(cfg.tensorboard_dir, cfg.out_dir.name) as log:
            while trainer.epochs_done < cfg.epochs:
                epoch = trainer.epochs_done + 1
                alpha = alpha_schedule(cfg.alpha_T, epoch, cfg.epochs)
                previous = _previous_probs(work, epoch - 1, data)

                def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                    prev = None if previous is None else previous[idx]
                    return F.cross_entropy(logits, pskd_targets(y[idx], prev, alpha, data.num_classes))

                entry = trainer.train_epoch(x, loss_fn, label=f"self-distill {cfg.student}", progress=progress)
                test_logits = predict(model, x_test)
                history.append({**entry, "alpha_t": alpha,
                                "test_acc": accuracy(test_logits, torch.from_numpy(data.y_test))})
                log.write(history[-1])
                _write_predictions(_predictions_path(work, epoch), model, cfg.student, data, predict(model, x),
                                   test_logits, epoch, alpha)
                state.save(trainer, history)     # every epoch: the next one needs this one's predictions
                _predictions_path(work, epoch - 1).unlink(missing_ok=True)
                if on_epoch is not None:
                    on_epoch(epoch, history[-1])

        test_logits = predict(model, x_test)
        metrics = {
            **evaluate(test_logits, data),
            "method": "ps-kd",
            "alpha_T": cfg.alpha_T,
            "params": count_params(model),
            "student": cfg.student,
            "data": run_data(cfg.dataset),
            "T": 1.0,
            "alpha": cfg.alpha_T,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
            "train_seconds": sum(h["seconds"] for h in history),
            "history": history,
            "resumed_from_epoch": resumed_from,
            "threads": torch.get_num_threads(),
            "dataset_fingerprint": data.fingerprint,
            "config": as_record(cfg),
        }
        save_run(cfg.out_dir, cfg.student, model, model_kwargs, as_record(cfg), metrics,
                 extra_files={PREDICTIONS_FILE: _predictions_path(work, cfg.epochs)})
        state.clear()
    return metrics
