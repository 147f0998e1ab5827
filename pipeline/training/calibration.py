"""Calibration: does a student's confidence mean what it says? Soft targets are meant to
improve it, so every run records its expected calibration error (ECE) and the
reliability-diagram bins it is computed from."""

from __future__ import annotations

import torch

__all__ = ["reliability"]


def reliability(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """Equal-width confidence bins over (0, 1]: per bin the mean confidence, the accuracy
    and the count, plus ECE = sum over bins of |accuracy - confidence| weighted by count
    (Guo et al. 2017, 15 bins)."""
    probs = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    # Bin b holds confidences in (b/bins, (b+1)/bins]; ceil keeps 1.0 in the last bin.
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).float()
    conf_sum = torch.bincount(index, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=bins)
    nonempty = count > 0
    mean_conf = torch.where(nonempty, conf_sum / count.clamp_min(1), torch.zeros_like(count))
    mean_acc = torch.where(nonempty, acc_sum / count.clamp_min(1), torch.zeros_like(count))
    ece = float(((mean_acc - mean_conf).abs() * count).sum() / max(len(labels), 1))
    return {"ece": ece, "bins": bins, "confidence": mean_conf.tolist(), "accuracy": mean_acc.tolist(),
            "count": count.long().tolist()}
