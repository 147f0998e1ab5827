"""The distillation loss (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

Both sides are log-probabilities (``log_softmax``), the KL is batch-mean, and the T^2
factor keeps the soft term's gradient on the same scale whatever T is. ``alpha = 0`` is
exactly cross-entropy on the hard labels, the scratch baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["kd_loss", "kd_loss_from_log_targets"]

# log_softmax rows sum to probability 1 up to float rounding; a row of probabilities or raw logits
# given as log-targets misses it by far more (probabilities: logsumexp of values in [0, 1] is >= log C).
_LOG_TARGET_TOLERANCE = 1e-3


def _check_arguments(student_logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, T, alpha,
                     log_targets: bool) -> None:
    """The public losses refuse what would silently give a wrong number: T = 0 (NaN), alpha outside
    [0, 1] (a negative loss), a teacher broadcast over the batch, probabilities given as log-targets."""
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"T must be a finite number > 0, got {T!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be (B, C), got shape {tuple(student_logits.shape)}")
    if teacher.shape != student_logits.shape:
        raise ValueError(f"the teacher's {'log-probabilities' if log_targets else 'logits'} must have the student's "
                         f"shape {tuple(student_logits.shape)}, got {tuple(teacher.shape)}")
    b, c = student_logits.shape
    if labels.shape not in ((b,), (b, c)):
        raise ValueError(f"labels must be (B,) class indices or (B, C) probabilities for B={b}, C={c}, "
                         f"got shape {tuple(labels.shape)}")
    if log_targets and teacher.numel():
        total = torch.logsumexp(teacher.detach().float(), dim=-1).abs().max().item()
        if not total <= _LOG_TARGET_TOLERANCE:
            raise ValueError(f"teacher_log_probs must be log-probabilities (log_softmax: each row's exp sums to 1), "
                             f"but a row's log-sum-exp is {total:.3g} away from 0; pass log_softmax(z_t / T), or "
                             f"call kd_loss with the logits")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            T: float, alpha: float) -> torch.Tensor:
    """student_logits, teacher_logits: (B, C) float, both at temperature 1; labels: (B,) int64.

    Returns a scalar. For a training loop of your own; softcache's loop uses
    :func:`kd_loss_from_log_targets` with targets precomputed from the cache. Raises ValueError for
    T not finite and > 0, alpha outside [0, 1], or shapes that disagree (nothing is broadcast).
    """
    _check_arguments(student_logits, teacher_logits, labels, T, alpha, log_targets=False)
    return _mixed(student_logits, F.log_softmax(teacher_logits.float() / T, dim=-1), labels, T, alpha, None)


def kd_loss_from_log_targets(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor,
                             labels: torch.Tensor, *, T: float, alpha: float,
                             labelled: torch.Tensor | None = None, check_targets: bool = True) -> torch.Tensor:
    """student_logits: (B, C) float; teacher_log_probs: (B, C) log_softmax(z_t / T); labels: (B,) int64
    class indices, or (B, C) class probabilities (a mixup view's blended label). ``alpha = 1`` is
    KL only (function matching): the hard labels do not enter the loss.

    ``labelled`` (B,) bool, for few-label training: a row without a label gets the soft term
    alone (weight 1), a labelled row the mix above; the loss is the mean over all B rows.

    Raises ValueError as :func:`kd_loss` does, and for targets that are not log-probabilities.
    ``check_targets=False`` skips that last check (a log-sum-exp and a device sync per batch), for a
    caller whose targets are log_softmax by construction: softcache's loop, reading the cache."""
    _check_arguments(student_logits, teacher_log_probs, labels, T, alpha, log_targets=check_targets)
    return _mixed(student_logits, teacher_log_probs, labels, T, alpha, labelled)


def _mixed(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, labels: torch.Tensor, T: float,
           alpha: float, labelled: torch.Tensor | None) -> torch.Tensor:
    """The loss itself, arguments already checked."""
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
