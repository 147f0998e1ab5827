"""Augmented views as data: a crop offset and a flip per view, applied by one gather.

With one cached logit per image, a student that trains on random crops and flips is
matched against the teacher's opinion of a *different* input, the clean image. FKD and
TinyViT fix this by caching the teacher's logits for several augmented views of each
image and replaying the exact view later. That needs a view to be a few small numbers
that can be stored and re-applied bit-for-bit, which is what this module provides:

    params (B, 3) integers: dy, dx in [0, 2 * pad] (the crop's top-left corner in the
    zero-padded image) and flip in {0, 1} (mirror left-right after cropping).

A view may also be a mixup pair (Zhang et al. 2018; "function matching" in Beyer et al.
2022): the view of image i blended with the same crop and flip of a partner image j,

    mix (B,) partner row j, and weight w in [128, 255]: the view is (w*a + (255-w)*b) / 255
    rounded, in integer arithmetic, so the teacher pass and the student build the same
    uint8 image on any device. lambda = w / 255 >= 1/2, so image i always dominates.

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

__all__ = ["DEFAULT_PAD", "MIX_SCALE", "apply_views", "mix_views", "render_views", "random_view_params",
           "draw_view_params", "draw_view_mix", "ReplayedViews"]

DEFAULT_PAD = 2     # crop +-2 pixels: the augmentation every softcache model trains with
MIX_SCALE = 255     # mixing weights are integers w out of 255 (lambda = w / 255)


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


def mix_views(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """a, b: uint8 (B, C, H, W); weight: (B,) integers in [0, 255]. round((w*a + (255-w)*b) / 255) as uint8,
    computed in int32 so it is exact and the same on every device."""
    w = weight.to(device=a.device, dtype=torch.int32).view(-1, 1, 1, 1)
    mixed = a.to(torch.int32) * w + b.to(torch.int32) * (MIX_SCALE - w)
    return torch.div(mixed + MIX_SCALE // 2, MIX_SCALE, rounding_mode="floor").to(torch.uint8)


def render_views(images: torch.Tensor, rows: torch.Tensor, params: torch.Tensor, pad: int = DEFAULT_PAD,
                 partner: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The uint8 views (B, C, H, W) of dataset rows ``rows`` (B,): crop and flip by ``params`` (B, 3),
    then, when ``partner`` (B,) rows and ``weight`` (B,) are given, mixed with the partners' same view.
    The teacher pass and the student's replay both build their inputs here."""
    views = apply_views(images[rows], params, pad)
    if partner is None:
        return views
    return mix_views(views, apply_views(images[partner], params, pad), weight)


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


def draw_view_mix(n: int, k: int, seed: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Mixup partners for the n * k cached views: partner rows (n * k,) int64 drawn uniformly, and
    weights (n * k,) uint8 = round(255 * max(lambda, 1 - lambda)) with lambda ~ Beta(alpha, alpha).
    A stream of its own (from ``seed``), so adding mixup leaves the crops and flips as they were."""
    rng = np.random.default_rng([seed, 0x6D6978])          # "mix"
    partner = rng.integers(0, n, n * k)
    lam = rng.beta(alpha, alpha, n * k)
    weight = np.rint(np.maximum(lam, 1.0 - lam) * MIX_SCALE).astype(np.uint8)
    return partner, weight


class ReplayedViews:
    """Stands in for the training images in :class:`pipeline.training.loop.Trainer`: indexing it
    with dataset rows returns, for each row, the cached view chosen for the current epoch.

    Row r sees view ``(offset[r] + epoch) % K`` in epoch ``epoch``: a different view every
    epoch, all K once per K epochs, and the offsets (from the run's seed) keep the rows of
    one batch from all seeing the same view number. :meth:`choice` gives the same numbers
    to the loss, which looks up the teacher's logits for exactly those views.

    The epoch's N views are rendered in one vectorised pass when the epoch changes, so a
    batch costs one row gather, as plain training does, instead of a crop, a flip and a
    mix per batch.
    """

    def __init__(self, images: torch.Tensor, params: torch.Tensor, *, seed: int, epoch: Callable[[], int],
                 pad: int = DEFAULT_PAD, mix: tuple[torch.Tensor, torch.Tensor] | None = None,
                 block_rows: int = 8192):
        """images: (N, C, H, W) uint8; params: (N, K, 3) the cached views' parameters; mix: the cached
        views' mixup partners (N, K) and weights (N, K), or None when the views are not mixed."""
        self.images, self.params, self.pad, self.epoch, self.mix = images, params, pad, epoch, mix
        self.k = params.shape[1]
        self.block_rows = block_rows
        self.offsets = torch.from_numpy(np.random.default_rng(seed).integers(0, self.k, len(images)))
        self._rendered: tuple | None = None

    def __len__(self) -> int:
        return len(self.images)

    def choice(self, rows: torch.Tensor) -> torch.Tensor:
        """The view number (B,) int64 each of ``rows`` sees in the current epoch."""
        return (self.offsets[rows.cpu()] + self.epoch()) % self.k

    def mixing(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Partner rows (B,) and weights (B,) of the views ``rows`` see this epoch; None without mixup."""
        if self.mix is None:
            return None
        rows = rows.cpu()
        if not isinstance(self.images, torch.Tensor):
            view = self.choice(rows)
            return self.mix[0][rows, view], self.mix[1][rows, view]
        _, _, partner, weight = self._epoch()
        return partner[rows], weight[rows]

    def _epoch(self) -> tuple:
        """(epoch, its N rendered views, their mixup partners and weights or None), made once per epoch."""
        epoch = self.epoch()
        if self._rendered is None or self._rendered[0] != epoch:
            everything = torch.arange(len(self.images))
            view = self.choice(everything)
            partner, weight = (None, None) if self.mix is None else (self.mix[0][everything, view],
                                                                     self.mix[1][everything, view])
            out = torch.empty_like(self.images)
            for lo in range(0, len(self.images), self.block_rows):
                rows = everything[lo:lo + self.block_rows]
                out[lo:lo + len(rows)] = render_views(self.images, rows, self.params[rows, view[rows]], self.pad,
                                                      None if partner is None else partner[rows],
                                                      None if weight is None else weight[rows])
            self._rendered = (epoch, out, partner, weight)
        return self._rendered

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.images, torch.Tensor):   # images on disk: render the batch alone, memory stays flat
            return self._batch(rows)
        return self._epoch()[1][rows]

    def _batch(self, rows: torch.Tensor) -> torch.Tensor:
        """The same views as :meth:`_epoch` renders, for one batch of rows."""
        rows = rows.cpu()
        view = self.choice(rows)
        mix = (None, None) if self.mix is None else (self.mix[0][rows, view], self.mix[1][rows, view])
        return render_views(self.images, rows, self.params[rows, view], self.pad, *mix)
