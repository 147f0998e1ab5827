"""Augmented views as data: a crop offset and a flip per view, applied by one gather.

With one cached logit per image, a student that trains on random crops and flips is
matched against the teacher's opinion of a *different* input, the clean image. FKD and
TinyViT fix this by caching the teacher's logits for several augmented views of each
image and replaying the exact view later. That needs a view to be a few small numbers
that can be stored and re-applied bit-for-bit, which is what this module provides:

    params (B, 3) integers: dy, dx in [0, 2 * pad] (the crop's top-left corner in the
    zero-padded image) and flip in {0, 1} (mirror left-right after cropping).

The same :func:`apply_views` serves the random augmentation of ordinary training
(:func:`random_view_params`), the teacher pass over cached views
(:func:`draw_view_params`) and the student's replay (:class:`ReplayedViews`), so the
three can never drift apart: the student trains on the views the teacher scored.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

__all__ = ["DEFAULT_PAD", "apply_views", "random_view_params", "draw_view_params", "ReplayedViews"]

DEFAULT_PAD = 2     # crop +-2 pixels: the augmentation every softcache model trains with


def apply_views(x: torch.Tensor, params: torch.Tensor, pad: int = DEFAULT_PAD) -> torch.Tensor:
    """x: (B, C, H, W) of any dtype; params: (B, 3) integer (dy, dx, flip). Returns the
    views, (B, C, H, W), same dtype: a pure gather, so uint8 in gives the exact uint8 view."""
    b, _, h, w = x.shape
    params = params.to(device=x.device, dtype=torch.long)
    dy, dx, flip = params[:, 0], params[:, 1], params[:, 2].bool()
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]          # (B, H, 1)
    cols = dx[:, None] + torch.arange(w, device=x.device)                         # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]            # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_view_params(b: int, generator: torch.Generator, pad: int = DEFAULT_PAD) -> torch.Tensor:
    """Fresh random views for one training batch, (B, 3) int64, drawn from ``generator``
    on the CPU so that a seed fixes them whatever the device."""
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = (torch.rand(b, generator=generator) < 0.5).long()
    return torch.stack([dy, dx, flip], dim=1)


def draw_view_params(n: int, k: int, seed: int, pad: int = DEFAULT_PAD) -> np.ndarray:
    """The K cached views of each of n images: (n * k, 3) uint8, row i * k + j is view j
    of image i. The same (n, k, seed, pad) always gives the same array, so a cache can be
    rebuilt bit-for-bit, and a cache's stored params can be checked against it."""
    generator = torch.Generator().manual_seed(seed)
    return random_view_params(n * k, generator, pad).to(torch.uint8).numpy()


class ReplayedViews:
    """Stands in for the training images in :class:`pipeline.train.Trainer`: indexing it
    with dataset rows returns, for each row, the cached view chosen for the current epoch.

    Row r sees view ``(offset[r] + epoch) % K`` in epoch ``epoch``: a different view every
    epoch, all K once per K epochs, and the offsets (from the run's seed) keep the rows of
    one batch from all seeing the same view number. :meth:`choice` gives the same numbers
    to the loss, which looks up the teacher's logits for exactly those views.
    """

    def __init__(self, images: torch.Tensor, params: torch.Tensor, *, seed: int, epoch: Callable[[], int],
                 pad: int = DEFAULT_PAD):
        """images: (N, C, H, W) uint8; params: (N, K, 3) the cached views' parameters."""
        self.images, self.params, self.pad, self.epoch = images, params, pad, epoch
        self.k = params.shape[1]
        self.offsets = torch.from_numpy(np.random.default_rng(seed).integers(0, self.k, len(images)))

    def __len__(self) -> int:
        return len(self.images)

    def choice(self, rows: torch.Tensor) -> torch.Tensor:
        """The view number (B,) int64 each of ``rows`` sees in the current epoch."""
        return (self.offsets[rows.cpu()] + self.epoch()) % self.k

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        rows_cpu = rows.cpu()
        return apply_views(self.images[rows], self.params[rows_cpu, self.choice(rows_cpu)], self.pad)
