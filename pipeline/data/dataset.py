"""The dataset every stage gets: train and test splits, their class names and their fingerprint.

Images are uint8 (N, C, H, W): a numpy array in memory, or a
:class:`pipeline.data.image_store.DiskImages` that reads rows from a prepared HDF5 file on demand
and indexes the same way. Nothing here imports the readers and writers of files
(:mod:`pipeline.data.prepare`, :mod:`pipeline.data.image_folder`, :mod:`pipeline.data.image_store`): they
all build this one object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import UsageError

__all__ = ["Dataset", "fingerprint_of"]


@dataclass(frozen=True)
class Dataset:
    """Train and test splits. x_*: (N, C, H, W) uint8; y_*: (N,) int64 in [0, num_classes)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    fingerprint: str = field(default="", compare=False)
    # An image folder's record (pipeline.data.image_folder.FolderSource): every file's path and digest,
    # and which file each row is. None for IDX and .npz data. Not part of the fingerprint, which
    # is the pixels' and labels' alone: the same images from a folder or an .npz are one dataset.
    source: object = field(default=None, compare=False)

    def __post_init__(self):
        _check_splits(self)
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", _fingerprint(self))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def normalization(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images, in [0, 1] units.

        Computed exactly from a 256-bin histogram per channel: every student run needs
        these, and converting 47M pixels to float64 took seconds of each run."""
        levels = np.arange(256, dtype=np.float64) / 255.0
        channels = self.x_train.shape[1]
        counts = np.zeros((channels, 256), dtype=np.float64)
        for start in range(0, len(self.x_train), 4096):   # blocks: bincount widens uint8 to int64, and on-disk
            block = self.x_train[start:start + 4096]       # images are read once
            for c in range(channels):
                counts[c] += np.bincount(block[:, c].ravel(), minlength=256)
        means, stds = [], []
        for c in range(channels):
            total = max(counts[c].sum(), 1.0)
            mean = float(counts[c] @ levels / total)
            var = float(counts[c] @ (levels - mean) ** 2 / total)
            means.append(mean)
            stds.append(max(var ** 0.5, 1e-6))
        return means, stds


def _check_splits(d: Dataset) -> None:
    for split in ("train", "test"):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        if x.ndim != 4 or x.dtype != np.uint8:
            raise UsageError(f"{d.name}: {split} images must be uint8 (N, C, H, W), got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise UsageError(f"{d.name}: {split} has {len(x)} images but labels of shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"{d.name}: {split} labels must be integers, got {y.dtype}")
        if len(y) and (y.min() < 0 or y.max() >= len(d.class_names)):
            raise UsageError(
                f"{d.name}: {split} labels must lie in [0, {len(d.class_names)}), "
                f"found {int(y.min())}..{int(y.max())}"
            )
    if len(d.y_train) == 0:
        raise UsageError(f"{d.name}: the train split holds no images, so nothing can learn from it; "
                         f"give a dataset with training images (and LIMIT=0 or a positive LIMIT)")
    if d.x_train.shape[1:] != d.x_test.shape[1:]:
        raise UsageError(f"{d.name}: train images {d.x_train.shape[1:]} and test images "
                         f"{d.x_test.shape[1:]} differ in shape")


def _fingerprint(d: Dataset) -> str:
    return fingerprint_of(d.x_train, d.y_train, d.x_test, d.y_test)


def fingerprint_of(x_train, y_train, x_test, y_test) -> str:
    """SHA-256 of the splits' shapes and bytes, read 4096 rows at a time: the same digest for the
    same images in memory or on disk (:class:`pipeline.data.image_store.DiskImages`), at the memory of a block."""
    h = hashlib.sha256()
    for arr in (x_train, np.asarray(y_train, dtype=np.int64), x_test, np.asarray(y_test, dtype=np.int64)):
        h.update(str(tuple(int(n) for n in arr.shape)).encode())
        for lo in range(0, len(arr), 4096):
            h.update(np.ascontiguousarray(arr[lo:lo + 4096]).tobytes())
    return h.hexdigest()[:16]
