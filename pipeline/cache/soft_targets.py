"""The cache in a user's own training loop: a ``torch.utils.data.Dataset`` of (image, soft target, label).

softcache's student stage is one loop; users also train in their own (plain PyTorch, Lightning,
the HF Trainer) and want the cached targets there. :class:`SoftTargetDataset` pairs the prepared
dataset's images with the cache's logits, checked against each other first, so a loader can never
hand a picture the targets of another. With ``views=True`` it serves the cached views instead: item
``i * K + j`` is view j of image i, rendered from the stored crop, flip and mixup pair, with the
teacher's logits for exactly that view (what the student stage replays with ``REPLAY=K``).

It works with ``DataLoader(num_workers > 0)``: the cache reader reopens its file in each worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from pipeline.cache.format import VIEW_SPLIT
from pipeline.cache.reader import CacheExpectations, LogitCache
from pipeline.cache.rows import cached_split_rows
from pipeline.data.image_store import torch_images
from pipeline.data.prepare import load_prepared
from pipeline.errors import UsageError
from pipeline.settings import check

__all__ = ["SoftTargetDataset"]


class SoftTargetDataset(TorchDataset):
    """(image float32 (C, H, W) in [0, 1], soft target (C,) at temperature ``T``, label int64).

    ``split``: 'train' or 'test'. ``views``: serve the cache's K views of every training image (the
    cache must hold them; a mixup view's label is its first image's). ``log_probs``: the target as
    log-probabilities, what :func:`pipeline.losses.kd_loss_from_log_targets` takes. Transfer-set rows
    have no image in the prepared dataset and are left out.
    """

    def __init__(self, cache: str | Path, dataset: str | Path, T: float = 4.0, *, split: str = "train",
                 views: bool = False, log_probs: bool = False):
        if split not in ("train", "test"):
            raise UsageError(f"split must be 'train' or 'test', got {split!r}")
        if views and split != "train":
            raise UsageError("cached views exist for the train split only; use views=False for 'test'")
        self.T = check("T", T)
        data = load_prepared(dataset)
        self.cache = LogitCache(cache, CacheExpectations(dataset_fingerprint=data.fingerprint,
                                                         num_classes=data.num_classes,
                                                         train_rows=len(data.y_train)))
        self.images = torch_images(data.x_train if split == "train" else data.x_test)
        self.labels = torch.from_numpy(data.y_train if split == "train" else data.y_test)
        self.class_names = data.class_names
        # An image folder's rows keep their files: paths[i] is image i's path relative to the folder.
        self.paths = data.source.row_paths(split) if data.source is not None else None
        self.views = self.cache.views if views else 0
        self.log_probs = log_probs
        self._split = VIEW_SPLIT if views else split
        self._rows = cached_split_rows(self.cache, data, self._split)   # raises in one line without views

    def __len__(self) -> int:
        return len(self.labels) * (self.views or 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image = self._rows.images_at(np.array([index]))[0]
        stored = torch.from_numpy(self.cache.stored_logits(self._split, [index], self.T))[0]
        scaled = stored * self.cache.temperature / self.T
        target = torch.log_softmax(scaled, dim=0) if self.log_probs else torch.softmax(scaled, dim=0)
        return image.float() / 255.0, target, self.labels[index // (self.views or 1)]
