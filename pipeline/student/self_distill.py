"""Self-distillation: a student taught with no teacher and no cache, by one of three methods, each
from one branch of the literature (the loss of each is in its module's docstring):

    pskd   progressive targets: the model's own previous epoch teaches (:mod:`pipeline.student.pskd`)
    byot   auxiliary branches: classifiers on the student's own stages are taught by its deployed
           head, and dropped before deployment (:mod:`pipeline.student.byot`)
    cskd   augmentation consistency: another image of the same class teaches (:mod:`pipeline.student.cskd`)

The recipe is the student stage's (the same Trainer: AdamW, one-cycle, batch, augmentation; the same
labelled subset for LABELS=N and the same held-out rows for HOLDOUT=N), so a self-distilled run and a
scratch run of the same seed differ only in the loss. Test (and held-out) accuracy is scored as the
student stage scores it.

Resumable per epoch: the trainer's whole state (the student, any branches, optimiser, schedule, random
stream) and PS-KD's predictions are saved in ``.<run>.resume/`` after every epoch, so a killed run
continues from the last finished epoch and ends, on the CPU with the same threads, exactly where an
uninterrupted run ends. What is saved as the run, exported and counted is the student alone.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import SelfDistillConfig, as_record
from pipeline.data.image_store import torch_images
from pipeline.data.label_subsets import labelled_rows, labels_record
from pipeline.data.prepare import Dataset, holdout_split, load_prepared
from pipeline.files import exclusive_writer
from pipeline.models import count_params
from pipeline.names import SELF_METHOD_LABEL, SELF_METHOD_RECORD, run_data
from pipeline.student.byot import BYOT_REFERENCE, BranchedStudent, byot_loss, check_branch_student
from pipeline.student.cskd import CSKD_REFERENCE, ClassPartners, cskd_loss
from pipeline.student.distill import SCORES_PER_RUN
from pipeline.student.pskd import PSKD_REFERENCE, Predictions, alpha_schedule, pskd_targets
from pipeline.training.history import EpochLog
from pipeline.training.loop import Trainer, accuracy, predict, set_threads
from pipeline.training.resume import TrainingState, recipe_key, resume_dir
from pipeline.training.run_dir import build_student, evaluate, save_run

__all__ = ["METHOD_NAMES", "REFERENCES", "self_distill", "alpha_schedule", "pskd_targets", "resume_dir",
           "PREDICTIONS_FILE"]

METHOD_NAMES = SELF_METHOD_LABEL       # "PS-KD", "BYOT", "CS-KD"
REFERENCES = {"pskd": PSKD_REFERENCE, "byot": BYOT_REFERENCE, "cskd": CSKD_REFERENCE}
PREDICTIONS_FILE = "predictions.h5"     # PS-KD: the last epoch's predictions, kept in the run


def _resume_key(cfg: SelfDistillConfig, data: Dataset) -> dict:
    """What a saved state must match to be continued: everything but threads, paths and other methods' settings."""
    others = [f"{m}_{k}" for m in ("byot", "cskd") if m != cfg.method for k in ("alpha", "beta", "T", "lambda")]
    return recipe_key(as_record(cfg), ("out_dir", "threads", "dataset", "tensorboard_dir", *others,
                                       *(("alpha_T",) if cfg.method != "pskd" else ())),
                      dataset_fingerprint=data.fingerprint)


def _training_rows(cfg: SelfDistillConfig, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The rows the run trains on (the labelled subset under LABELS=N) and the held-out rows it scores."""
    train_rows, held_rows = holdout_split(len(data.y_train), cfg.holdout)
    if cfg.labels is not None:
        train_rows = labelled_rows(data.y_train, train_rows, cfg.labels, cfg.seed, data.num_classes)
    return train_rows, held_rows


def self_distill(cfg: SelfDistillConfig, progress: bool = True,
                 on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train one student by ``cfg.method`` (resuming a killed run), write its run directory, return metrics.

    ``on_epoch(epoch, figures)`` is called after each epoch's state is safely saved.
    """
    if cfg.method == "byot":
        check_branch_student(cfg.student)
    set_threads(cfg.threads)
    data = load_prepared(cfg.dataset)
    rows, held_rows = _training_rows(cfg, data)
    model, model_kwargs = build_student(cfg.student, data, cfg.seed)
    trained = BranchedStudent(model, data.image_shape, data.num_classes) if cfg.method == "byot" else model
    every_row = cfg.labels is None and not cfg.holdout
    trainer = Trainer(trained, len(data.y_train) if every_row else torch.from_numpy(rows), epochs=cfg.epochs,
                      batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                      augment=cfg.augment)
    x, y = torch_images(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch_images(data.x_test), torch.from_numpy(data.y_test)
    held = torch.from_numpy(held_rows)
    label = f"{METHOD_NAMES[cfg.method]} {cfg.student}"
    score_every = max(1, cfg.epochs // SCORES_PER_RUN)

    with exclusive_writer(cfg.out_dir, what="self-distillation run"):
        state = TrainingState(cfg.out_dir, _resume_key(cfg, data))
        history, _ = state.restore(trainer)
        predictions = Predictions(state.dir, data, rows) if cfg.method == "pskd" else None
        partners = ClassPartners(y, torch.from_numpy(rows), data.num_classes) if cfg.method == "cskd" else None
        resumed_from = trainer.epochs_done
        with EpochLog(cfg.tensorboard_dir, cfg.out_dir.name) as log:
            while trainer.epochs_done < cfg.epochs:
                epoch = trainer.epochs_done + 1
                extra: dict = {}
                if cfg.method == "pskd":
                    alpha = extra["alpha_t"] = alpha_schedule(cfg.alpha_T, epoch, cfg.epochs)
                    previous = predictions.previous_probs(epoch - 1)

                    def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                        prev = None if previous is None else previous[idx]
                        return F.cross_entropy(logits, pskd_targets(y[idx], prev, alpha, data.num_classes))
                    forward = None
                elif cfg.method == "byot":
                    def loss_fn(out, idx: torch.Tensor) -> torch.Tensor:
                        return byot_loss(out, y[idx], alpha=cfg.byot_alpha, beta=cfg.byot_beta, T=cfg.byot_T)
                    forward = trained.forward_all
                else:
                    def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                        mates = partners.draw(idx, trainer.generator)
                        with torch.no_grad():     # the partner teaches: one more forward, no backward
                            mate_logits = model(trainer.inputs(x, mates))
                        return cskd_loss(logits, mate_logits, y[idx], lam=cfg.cskd_lambda, T=cfg.cskd_T)
                    forward = None

                entry = {**trainer.train_epoch(x, loss_fn, label=label, progress=progress, forward=forward), **extra}
                if epoch % score_every == 0 or epoch == cfg.epochs:
                    test_logits = predict(model, x_test)
                    entry["test_acc"] = accuracy(test_logits, y_test)
                    if cfg.holdout:      # the score a method's settings are chosen by; never the test split
                        entry["val_acc"] = accuracy(predict(model, x[held]), y[held])
                history.append(entry)
                log.write(entry)
                if predictions is not None:   # the next epoch needs this one's predictions
                    predictions.write(epoch, model, cfg.student, x, x_test, alpha)
                state.save(trainer, history)
                if predictions is not None:
                    predictions.path(epoch - 1).unlink(missing_ok=True)
                if on_epoch is not None:
                    on_epoch(epoch, history[-1])

        test_logits = predict(model, x_test)
        seconds = [h["seconds"] for h in history]
        metrics = {
            **evaluate(test_logits, data),
            **({"val_acc": history[-1]["val_acc"], "holdout": cfg.holdout} if cfg.holdout else {}),
            "method": SELF_METHOD_RECORD[cfg.method],
            "method_settings": cfg.knobs,
            "reference": REFERENCES[cfg.method],
            "params": count_params(model),          # the student alone: BYOT's branches are not shipped
            "trained_params": count_params(trained),
            "student": cfg.student,
            "data": run_data(cfg.dataset),
            "T": 1.0,
            # the taught term's share of the loss, as a KD run's ALPHA (never 0: reports tell scratch by alpha 0)
            "alpha": {"pskd": cfg.alpha_T, "byot": cfg.byot_alpha,
                      "cskd": cfg.cskd_lambda / (1 + cfg.cskd_lambda)}[cfg.method],
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "inputs": "crop+flip" if cfg.augment else "clean",
            "augment": cfg.augment,
            **labels_record(cfg.labels, rows, data.y_train, data.num_classes),
            "train_rows": len(rows),
            "seconds_per_epoch": sum(seconds) / len(seconds),
            "train_seconds": sum(seconds),
            "history": history,
            "resumed_from_epoch": resumed_from,
            "threads": torch.get_num_threads(),
            "dataset_fingerprint": data.fingerprint,
            "config": as_record(cfg),
        }
        if cfg.method == "pskd":
            metrics["alpha_T"] = cfg.alpha_T
        save_run(cfg.out_dir, cfg.student, model, model_kwargs, as_record(cfg), metrics,
                 extra_files={PREDICTIONS_FILE: predictions.path(cfg.epochs)} if predictions else None)
        state.clear()
    return metrics
