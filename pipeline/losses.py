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

__all__ = ["kd_loss", "kd_loss_from_log_targets", "soft_kl", "token_kd_loss"]

# log_softmax rows sum to probability 1 up to float rounding; a row of probabilities or raw logits
# given as log-targets misses it by far more (probabilities: logsumexp of values in [0, 1] is >= log C).
_LOG_TARGET_TOLERANCE = 1e-3


def _check_T_alpha(T, alpha) -> None:
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"T must be a finite number > 0, got {T!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")


def _check_arguments(student_logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, T, alpha,
                     log_targets: bool) -> None:
    """The public losses refuse what would silently give a wrong number: T = 0 (NaN), alpha outside
    [0, 1] (a negative loss), a teacher broadcast over the batch, probabilities given as log-targets."""
    _check_T_alpha(T, alpha)
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
        return soft_kl(student_logits, teacher_log_probs, T)
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0:
        return hard
    return alpha * soft_kl(student_logits, teacher_log_probs, T) + (1.0 - alpha) * hard


def _partly_labelled(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, labels: torch.Tensor,
                     labelled: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    soft = F.kl_div(F.log_softmax(student_logits / T, dim=-1), teacher_log_probs, reduction="none",
                    log_target=True).sum(dim=-1) * (T * T)
    hard = F.cross_entropy(student_logits, labels, reduction="none")
    mask = labelled.to(student_logits.dtype)
    soft_weight = 1.0 - (1.0 - alpha) * mask      # alpha on labelled rows, 1 elsewhere
    return (soft_weight * soft + (1.0 - alpha) * mask * hard).mean()


def soft_kl(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) at temperature T, batch mean; ``teacher_log_probs`` = log_softmax(z_t / T).
    Self-distillation's teachers (a branch's deployed head, a same-class partner) use it too, detached."""
    return F.kl_div(F.log_softmax(student_logits / T, dim=-1), teacher_log_probs,
                    reduction="batchmean", log_target=True) * (T * T)


def _check_log_targets(log_probs: torch.Tensor, log_tail: torch.Tensor | None) -> None:
    """The teacher's side must be log-probabilities: at most 0 and, with the tail, summing to 1 per position.
    Probabilities (or logits) handed in by mistake are refused, not turned into a loss of the wrong sign. The
    sum is checked at each window's first position (a mistake of kind is in every position; a pass over all
    of them would cost a dense step at V = 32,768 a tenth of its time)."""
    first = log_probs[:, :1].float()
    total = torch.logsumexp(first, dim=-1)
    if log_tail is not None:
        total = torch.logaddexp(total, log_tail[:, :1].float())
    if torch.isnan(first).any() or (first > 1e-3).any() or not torch.allclose(
            total, torch.zeros_like(total), atol=1e-2):
        raise ValueError("the teacher's targets must be log-probabilities (each <= 0, summing with the tail to 1 "
                         "per position), as TokenCache.targets gives them; got values that are not")


def token_kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor | None,
                  teacher_log_probs: torch.Tensor, teacher_log_tail: torch.Tensor, *, T: float,
                  alpha: float) -> torch.Tensor:
    """The per-token loss of an LM student, mean over the B·L positions:

        alpha · T² · KL(teacher ‖ student) + (1 − alpha) · CE(student, next token)

    student_logits: (B, L, V) float at temperature 1; targets: (B, L) int64, the next tokens.
    With the teacher's top-k (``ids`` (B, L, k), ``teacher_log_probs`` (B, L, k) at T and
    ``teacher_log_tail`` (B, L), the log of the mass outside the top-k, from the per-token cache), the KL
    runs over the k kept tokens plus one tail bucket:

        KL = Σ_{v ∈ S} p_v (log p_v − log q_v) + p_tail (log p_tail − log q_tail)

    where q = softmax(z_s / T) and the student's tail ``log q_tail`` is a log-sum-exp over the tokens
    outside S less the log-sum-exp over all (never 1 − Σ q). With ``ids`` None (dense, k = V) the support
    is every token, the tail bucket is empty, and this is the full KL at T. ``alpha = 0`` is plain
    next-token cross-entropy, the scratch baseline."""
    _check_T_alpha(T, alpha)
    if student_logits.dim() != 3 or targets.shape != student_logits.shape[:2]:
        raise ValueError(f"student_logits must be (B, L, V) and targets (B, L), got {tuple(student_logits.shape)} "
                         f"and {tuple(targets.shape)}")
    if ids is not None and (ids.shape != teacher_log_probs.shape or ids.shape[:2] != targets.shape
                            or teacher_log_tail.shape != targets.shape):
        raise ValueError(f"the teacher's ids {tuple(ids.shape)}, log-probabilities {tuple(teacher_log_probs.shape)} "
                         f"and tail {tuple(teacher_log_tail.shape)} must be (B, L, k), (B, L, k) and (B, L)")
    if not targets.numel():
        raise ValueError("an empty batch has no tokens to learn from: give at least one window of one position")
    if alpha and ids is None and teacher_log_probs.shape != student_logits.shape:
        raise ValueError(f"a dense teacher's log-probabilities must be (B, L, V) {tuple(student_logits.shape)}, got "
                         f"{tuple(teacher_log_probs.shape)}")
    if alpha:
        _check_log_targets(teacher_log_probs, teacher_log_tail if ids is not None else None)
    z = student_logits.float()
    hard = F.cross_entropy(z.flatten(0, 1), targets.flatten())
    if alpha == 0:
        return hard
    s = z / T
    lse = torch.logsumexp(s, dim=-1)
    if ids is None:
        soft = F.kl_div(s.log_softmax(-1), teacher_log_probs, reduction="none", log_target=True).sum(-1)
    else:
        q_support = s.gather(-1, ids) - lse[..., None]
        q_tail = torch.logsumexp(s.scatter(-1, ids, float("-inf")), dim=-1) - lse
        soft = (teacher_log_probs.exp() * (teacher_log_probs - q_support)).sum(-1)
        tail = teacher_log_tail.exp() * (teacher_log_tail - q_tail)
        soft = soft + torch.where(torch.isfinite(teacher_log_tail), tail, torch.zeros_like(tail))
    return alpha * T * T * soft.mean() + (1.0 - alpha) * hard
