"""Progressive self-knowledge distillation (PS-KD; Kim, Ji, Yoon, Hwang, ICCV 2021, arXiv 2006.12000):
the progressive-target kind of self-distillation, where the teacher is the model's own previous epoch.

At epoch t of E the target is the hard label mixed with the model's own predictions from the end
of epoch t-1,

    target_t = (1 - alpha_t) * onehot(y) + alpha_t * softmax(z_{t-1}),   alpha_t = ALPHA_T * t / E,

and the loss is cross-entropy against that soft target; ALPHA_T = 0.8 is the paper's default. The
first epoch has no earlier predictions and trains on the hard labels. The previous epoch's
predictions are a cache like any other: after every epoch the model scores the clean images of the
rows it trains on and the test split, and the logits go to an HDF5 file in the cache format
(``softcache inspect`` reads it; rows the run does not train on hold zeros), which the next epoch
reads its targets from, and which a resumed run finds beside its saved state.

Unlike the reference implementation, which reuses the outputs recorded during the previous epoch's
training pass (augmented images, weights changing mid-epoch), the targets here are the end-of-epoch
model on the clean images: the same network for every row, and a file that can be inspected and
resumed from.

A language-model student (``softcache lm-student --self-alpha-T``, ``make self-distill`` on text) takes the
same targets from the state it had at its last evaluation, every ``eval_every`` steps an "epoch": that
state is what its resume file holds, so the teacher is a copy in memory, one forward without a gradient
per step, and no file (:func:`token_pskd_loss`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.cache.format import write_cache
from pipeline.cache.reader import CacheExpectations, LogitCache
from pipeline.data.prepare import Dataset
from pipeline.training.checkpoint import model_fingerprint
from pipeline.training.loop import accuracy, predict

__all__ = ["PSKD_REFERENCE", "alpha_schedule", "pskd_targets", "token_pskd_loss", "Predictions"]

PSKD_REFERENCE = "Kim et al., Self-Knowledge Distillation with Progressive Refinement of Targets, ICCV 2021 " \
                 "(arXiv 2006.12000)"


def alpha_schedule(alpha_T: float, epoch: int, epochs: int) -> float:
    """alpha_t for epoch t in 1..epochs: grows linearly to alpha_T at the last epoch."""
    return alpha_T * epoch / epochs


def pskd_targets(labels: torch.Tensor, previous_probs: torch.Tensor | None, alpha: float,
                 num_classes: int) -> torch.Tensor:
    """(1 - alpha) * onehot(labels) + alpha * previous_probs; the one-hot labels when there is no previous epoch."""
    onehot = F.one_hot(labels, num_classes).float()
    return onehot if previous_probs is None else (1.0 - alpha) * onehot + alpha * previous_probs


def token_pskd_loss(student_logits: torch.Tensor, targets: torch.Tensor, previous_logits: torch.Tensor,
                    alpha: float) -> torch.Tensor:
    """PS-KD for a language model, per position (mean over B·L): cross-entropy against
    (1 - alpha) * onehot(next token) + alpha * softmax(previous), written without the dense target:

        (1 - alpha) * CE(z, y) - alpha * sum_v softmax(z_prev)_v * log_softmax(z)_v

    student_logits, previous_logits: (B, L, V); targets: (B, L). ``previous_logits`` are detached here."""
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    hard = F.nll_loss(log_q.reshape(-1, log_q.shape[-1]), targets.reshape(-1))
    soft = -(F.softmax(previous_logits.detach().float(), dim=-1) * log_q).sum(-1).mean()
    return (1 - alpha) * hard + alpha * soft


class Predictions:
    """The per-epoch prediction files of one PS-KD run, kept in its resume folder ``work``."""

    def __init__(self, work: Path, data: Dataset, rows: np.ndarray):
        self.work, self.data, self.rows = work, data, rows
        self.index = torch.from_numpy(rows)

    def path(self, epoch: int) -> Path:
        return self.work / f"predictions-e{epoch:03d}.h5"

    def previous_probs(self, epoch: int) -> torch.Tensor | None:
        """softmax of the train logits saved at the end of ``epoch`` (None before the first epoch)."""
        if epoch == 0:
            return None
        cache = LogitCache(self.path(epoch), CacheExpectations(
            dataset_fingerprint=self.data.fingerprint, num_classes=self.data.num_classes,
            train_rows=len(self.data.y_train)))
        return torch.softmax(cache.logits("train"), dim=1)

    def write(self, epoch: int, model: torch.nn.Module, arch: str, x: torch.Tensor, x_test: torch.Tensor,
              alpha: float) -> None:
        """The end-of-epoch model's logits on the training rows (clean images) and the test split."""
        data = self.data
        train_logits = np.zeros((len(data.y_train), data.num_classes), np.float32)
        train_logits[self.rows] = predict(model, x[self.index]).numpy()
        test_logits = predict(model, x_test)
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
        with write_cache(self.path(epoch), rows={"train": len(data.y_train), "test": len(data.y_test)},
                         num_classes=data.num_classes, temperature=1.0, attrs=attrs) as writer:
            for split, logits, labels in (("train", train_logits, data.y_train),
                                          ("test", test_logits.numpy(), data.y_test)):
                writer.write(split, 0, logits, labels, np.arange(len(labels)))
