"""Transfer sets: images without labels that the teacher scores and the student learns from.

Hinton et al. (2015) call the data a student is distilled on the *transfer set*. When labels
are scarce it is mostly unlabelled in-domain images. softcache takes such a set as an
``.npz`` of images alone, or a folder of image files (any layout; decoded, scaled and cropped
to the dataset's image shape as :mod:`pipeline.data.image_folder` does); the teacher pass appends
its rows to the cache's train split after the labelled rows, with the label value C (one past the last class) that means "no
label", and records the set's fingerprint, so a student is never handed another set's
logits. A transfer file that also holds labels has them ignored, and the pass says so: a
transfer set is unlabelled by definition, and labels belong in ``DATASET``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.image_folder import read_images
from pipeline.data.prepare import as_nchw
from pipeline.errors import UsageError

__all__ = ["TransferSet", "load_transfer", "IMAGE_KEYS", "LABEL_KEYS"]

IMAGE_KEYS = ("x", "images", "x_transfer", "x_train")   # the first one present is the transfer set
LABEL_KEYS = ("y", "labels", "y_transfer", "y_train")


@dataclass(frozen=True)
class TransferSet:
    name: str                 # the file's stem: names the cache and the runs made from it
    x: np.ndarray             # uint8 (N, C, H, W)
    fingerprint: str          # digest of the images: a cache records it, a student checks it
    labels_ignored: bool      # the file held labels, which were not used


def load_transfer(path: Path, image_shape: tuple[int, int, int], layout: str = "auto") -> TransferSet:
    """The transfer images of ``path``, checked against the labelled dataset's ``image_shape`` (C, H, W)."""
    path = Path(path)
    if path.is_dir():     # a folder of image files, any layout: decoded to the dataset's shape
        x, _ = read_images(path, tuple(image_shape))
        return TransferSet(path.name, x, _digest(x), False)
    try:
        with np.load(path, allow_pickle=False) as f:
            key = next((k for k in IMAGE_KEYS if k in f.files), None)
            if key is None:
                raise UsageError(f"TRANSFER={path} holds no images (arrays {sorted(f.files)}); a transfer set is "
                                 f"an .npz with one of {', '.join(IMAGE_KEYS)}")
            images = f[key]
            labels_ignored = any(k in f.files for k in LABEL_KEYS)
    except (OSError, ValueError) as exc:
        raise UsageError(f"TRANSFER={path} is not a readable .npz file ({exc})") from None
    x = as_nchw(images, f"TRANSFER={path} {key}", layout)
    if x.shape[1:] != tuple(image_shape):
        raise UsageError(f"TRANSFER={path} holds images of shape {x.shape[1:]} (C, H, W), but the dataset's are "
                         f"{tuple(image_shape)}; give a transfer set of the same size and channels")
    if not len(x):
        raise UsageError(f"TRANSFER={path} holds no images")
    return TransferSet(path.stem, x, _digest(x), labels_ignored)


def _digest(x: np.ndarray) -> str:
    h = hashlib.sha256(str(x.shape).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:16]
