"""Class-wise self-knowledge distillation (CS-KD; Yun, Park, Lee, Shin, CVPR 2020, arXiv 2003.13964):
the data-augmentation kind of self-distillation.

Each training image x (label y) is paired with another training image x' of the same class, drawn
afresh every step; the model's own prediction on x' is the soft target for x:

    L = CE(z(x), y) + lambda * T^2 * KL(softmax(z(x') / T) || softmax(z(x) / T))      (z(x') detached)

The defaults lambda = 1, T = 4 are the paper's (its CIFAR-100 and fine-grained runs). As in the
authors' code, the partner's forward runs without a gradient (in training mode), so a step costs
one extra forward, not an extra backward; the partner passes through the same input path as the
batch (:meth:`pipeline.training.loop.Trainer.inputs`: scaling, and the project's crop and flip
when AUGMENT=1). Partners come from the trainer's random stream, so a resumed run draws the same
ones, and only from the rows the run trains on (a few-label run pairs labelled rows only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.losses import soft_kl

__all__ = ["CSKD_REFERENCE", "ClassPartners", "cskd_loss"]

CSKD_REFERENCE = "Yun et al., Regularizing Class-wise Predictions via Self-knowledge Distillation, CVPR 2020 " \
                 "(arXiv 2003.13964)"


class ClassPartners:
    """Draws, for each row of a batch, another training row of the same class."""

    def __init__(self, labels: torch.Tensor, rows: torch.Tensor, num_classes: int):
        """labels: (N,) every row's class; rows: the rows a partner may come from (the run's training rows)."""
        classes = labels[rows]
        order = torch.argsort(classes, stable=True)
        self.by_class = rows[order]                       # rows grouped by class, in row order within a class
        self.counts = torch.bincount(classes, minlength=num_classes)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.labels = labels

    def draw(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) rows, each of the same class as the row of ``idx`` at its place (possibly that row itself when
        its class has one training row)."""
        classes = self.labels[idx]
        counts = self.counts[classes]
        pick = (torch.rand(len(idx), generator=generator) * counts).long().clamp(max=counts - 1)
        return self.by_class[self.starts[classes] + pick]


def cskd_loss(logits: torch.Tensor, partner_logits: torch.Tensor, labels: torch.Tensor, *, lam: float,
              T: float) -> torch.Tensor:
    """The loss in this module's docstring; ``partner_logits`` are detached here."""
    target = F.log_softmax(partner_logits.detach().float() / T, dim=-1)
    return F.cross_entropy(logits, labels) + lam * soft_kl(logits, target, T)
