"""Which input each cache row is: an image of the prepared dataset, or a cached view of one (crop, flip and
mixup partner, re-rendered from the stored params). The teacher pass writes rows in this order, and the
re-scorer and the dataset for your own loop read them back the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.augment import DEFAULT_PAD, render_views
from pipeline.data.image_store import torch_images

__all__ = ["SplitRows", "cached_split_rows"]


class SplitRows:
    """The rows of one cache split: the images themselves, or K cached views of each
    (row i * K + j is view j of image i, made by applying stored params, and mixup
    partners and weights when there are any, to the uint8 image)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, view_params: np.ndarray | None = None, views: int = 1,
                 mix: tuple[np.ndarray, np.ndarray] | None = None):
        self.x, self.y, self.view_params, self.views, self.mix = x, y, view_params, views, mix

    def __len__(self) -> int:
        return len(self.y) * self.views

    def index(self, lo: int, hi: int) -> np.ndarray:
        """Dataset row of each cache row."""
        return np.arange(lo, hi) // self.views

    def labels(self, lo: int, hi: int) -> np.ndarray:
        return self.y[self.index(lo, hi)]

    def params(self, lo: int, hi: int) -> np.ndarray | None:
        return None if self.view_params is None else self.view_params[lo:hi]

    def mixing(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.mix is None else (self.mix[0][lo:hi], self.mix[1][lo:hi])

    def images(self, lo: int, hi: int) -> torch.Tensor:
        """uint8 (B, C, H, W) inputs of cache rows [lo, hi)."""
        return self.images_at(np.arange(lo, hi))

    def images_at(self, cache_rows: np.ndarray) -> torch.Tensor:
        """uint8 (B, C, H, W) inputs of the given cache rows, in their order."""
        rows = torch.from_numpy(cache_rows // self.views)
        if self.view_params is None:
            return torch_images(self.x)[rows]
        mix = None if self.mix is None else (torch.from_numpy(self.mix[0][cache_rows]),
                                             torch.from_numpy(self.mix[1][cache_rows]))
        return render_views(torch_images(self.x), rows, torch.from_numpy(self.view_params[cache_rows]),
                            DEFAULT_PAD, *(mix or (None, None)))


def cached_split_rows(cache, data, split: str) -> SplitRows:
    """The inputs of a finished cache's ``split`` (a ``LogitCache``, its prepared dataset): for the view
    split, the views as the cache stores them (params and mixup pairs), so each is re-rendered exactly."""
    if split == "test":
        return SplitRows(data.x_test, data.y_test)
    if split == "train":
        return SplitRows(data.x_train, data.y_train)
    params = cache.view_params().numpy().reshape(-1, 3)
    mix = cache.view_mix(cache.views)
    mix = None if mix is None else (mix[0].numpy().reshape(-1), mix[1].numpy().reshape(-1))
    return SplitRows(data.x_train, data.y_train, params, cache.views, mix)
