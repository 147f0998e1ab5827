"""The distillation loss (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

Both sides are log-probabilities (``log_softmax``), the KL is batch-mean, and the T^2
factor keeps the soft term's gradient on the same scale whatever T is. ``alpha = 0`` is
exactly cross-entropy on the hard labels, the scratch baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kd_loss", "kd_loss_from_log_targets"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            T: float, alpha: float) -> torch.Tensor:
    """student_logits, teacher_logits: (B, C) float, both at temperature 1; labels: (B,) int64.

    Returns a scalar. For a training loop of your own; softcache's loop uses
    :func:`kd_loss_from_log_targets` with targets precomputed from the cache.
    """
    return kd_loss_from_log_targets(student_logits, F.log_softmax(teacher_logits.float() / T, dim=-1),
                                    labels, T=T, alpha=alpha)


def kd_loss_from_log_targets(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor,
                             labels: torch.Tensor, *, T: float, alpha: float,
                             labelled: torch.Tensor | None = None) -> torch.Tensor:
    """student_logits: (B, C) float; teacher_log_probs: (B, C) log_softmax(z_t / T); labels: (B,) int64
    class indices, or (B, C) class probabilities (a mixup view's blended label). ``alpha = 1`` is
    KL only (function matching): the hard labels do not enter the loss.

    ``labelled`` (B,) bool, for few-label training: a row without a label gets the soft term
    alone (weight 1), a labelled row the mix above; the loss is the mean over all B rows."""
    if labelled is not None and alpha < 1:
        return _partly_labelled(student_logits, teacher_log_probs, labels, labelled, T, alpha)
    if alpha == 1:
        return _soft_term(student_logits, teacher_log_probs, T)
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0:
        return hard
    return alpha * _soft_term(student_logits, teacher_log_probs, T) + (1.0 - alpha) * hard


def _partly_labelled(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, labels: torch.Tensor,
                     labelled: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    soft = F.kl_div(F.log_softmax(student_logits / T, dim=-1), teacher_log_probs, reduction="none",
                    log_target=True).sum(dim=-1) * (T * T)
    hard = F.cross_entropy(student_logits, labels, reduction="none")
    mask = labelled.to(student_logits.dtype)
    soft_weight = 1.0 - (1.0 - alpha) * mask      # alpha on labelled rows, 1 elsewhere
    return (soft_weight * soft + (1.0 - alpha) * mask * hard).mean()


def _soft_term(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) at temperature T, batch mean."""
    return F.kl_div(F.log_softmax(student_logits / T, dim=-1), teacher_log_probs,
                    reduction="batchmean", log_target=True) * (T * T)
