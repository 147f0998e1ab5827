"""The logit cache: the one module that knows the HDF5 layout (see docs/CACHE_FORMAT.md).

Layout, format_version 1::

    /train/logits   (N, C) float32|float16  teacher logits divided by attrs['temperature']
    /train/labels   (N,)   int64            hard labels, so a student needs only cache + images
    /train/index    (N,)   int64            dataset row of each cache row; always 0..N-1
    /test/logits, /test/labels, /test/index  the same for the test split (for reports)
    attrs: format_version, temperature, num_classes, teacher_fingerprint,
           dataset_fingerprint, teacher, teacher_test_acc, created, producer, complete

Every dataset carries HDF5's fletcher32 checksum, so a flipped byte fails the read
instead of silently changing a soft target. ``complete`` is written last, and the file
gets its final name only after that (``pipeline.files.atomic_path``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch

from pipeline.errors import UsageError
from pipeline.files import atomic_path

__all__ = ["FORMAT_VERSION", "CacheWriter", "write_cache", "LogitCache", "CacheExpectations"]

FORMAT_VERSION = 1
SPLITS = ("train", "test")
_REBUILD = "run 'make teacher-logits' to rebuild it"


class CacheWriter:
    """Preallocated HDF5 datasets filled in row blocks; use :func:`write_cache` to get one."""

    def __init__(self, f: h5py.File, rows: dict[str, int], num_classes: int, dtype: str):
        self._f = f
        self._written = {s: 0 for s in rows}
        for split, n in rows.items():
            g = f.create_group(split)
            chunk_rows = max(1, min(n, 8192))
            g.create_dataset("logits", (n, num_classes), dtype=dtype, chunks=(chunk_rows, num_classes),
                             fletcher32=True)
            for name in ("labels", "index"):
                g.create_dataset(name, (n,), dtype="int64", chunks=(chunk_rows,), fletcher32=True)

    def write(self, split: str, start: int, logits: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        """Rows [start, start + len(logits)) of ``split``; logits already divided by the temperature."""
        stop = start + len(logits)
        g = self._f[split]
        g["logits"][start:stop] = logits
        g["labels"][start:stop] = labels
        g["index"][start:stop] = index
        self._written[split] = max(self._written[split], stop)

    def rows_written(self, split: str) -> int:
        return self._written[split]


@contextlib.contextmanager
def write_cache(path: Path, *, rows: dict[str, int], num_classes: int, temperature: float,
                attrs: dict, dtype: str = "float32") -> Iterator[CacheWriter]:
    """Open a new cache for writing; on a clean exit mark it complete and move it into place."""
    if dtype not in ("float32", "float16"):
        raise UsageError(f"cache dtype must be float32 or float16, got {dtype}")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({
                "format_version": FORMAT_VERSION,
                "temperature": float(temperature),
                "num_classes": int(num_classes),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "complete": False,
                **attrs,
            })
            writer = CacheWriter(f, rows, num_classes, dtype)
            yield writer
            for split, n in rows.items():
                if writer.rows_written(split) != n:
                    raise RuntimeError(f"cache writer filled {writer.rows_written(split)} of {n} {split} rows")
            f.attrs["complete"] = True


@dataclass(frozen=True)
class CacheExpectations:
    """What the reader checks the file against; ``None`` means 'not checked'."""

    dataset_fingerprint: str | None = None
    teacher_fingerprint: str | None = None
    num_classes: int | None = None
    train_rows: int | None = None


class LogitCache:
    """A verified, in-memory view of one cache file.

    Opening it checks everything a student relies on: the file is readable and complete,
    every checksum holds, shapes agree, logits are finite, labels lie in [0, C), rows are
    in dataset order, and the fingerprints match the caller's expectations. Any failure
    is a :class:`UsageError` that says which make target rebuilds the cache.
    """

    def __init__(self, path: Path, expect: CacheExpectations = CacheExpectations()):
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"cache {self.path} is missing; {_REBUILD}")
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = {k: _plain(v) for k, v in f.attrs.items()}
                self._check_attrs()
                self._arrays = {
                    split: {name: f[split][name][()] for name in ("logits", "labels", "index")}
                    for split in SPLITS
                }
        except UsageError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise UsageError(f"cache {self.path} is unreadable or corrupt ({_first_line(exc)}); {_REBUILD}") from None
        self._check_arrays()
        self._check_expectations(expect)

    # --- checks ---------------------------------------------------------------------
    def _fail(self, what: str) -> UsageError:
        return UsageError(f"cache {self.path}: {what}; {_REBUILD}")

    def _check_attrs(self) -> None:
        if not self.attrs.get("complete", False):
            raise self._fail("not marked complete (the teacher pass did not finish)")
        if self.attrs.get("format_version") != FORMAT_VERSION:
            raise self._fail(f"format_version {self.attrs.get('format_version')} is not {FORMAT_VERSION}")
        t = self.attrs.get("temperature")
        if not isinstance(t, float) or not np.isfinite(t) or t <= 0:
            raise self._fail(f"temperature attribute {t!r} is not a positive number")

    def _check_arrays(self) -> None:
        c = self.num_classes
        for split, a in self._arrays.items():
            n = len(a["labels"])
            if a["logits"].ndim != 2 or a["logits"].shape != (n, c) or a["index"].shape != (n,):
                raise self._fail(f"{split} shapes disagree: logits {a['logits'].shape}, labels "
                                 f"{a['labels'].shape}, index {a['index'].shape}, {c} classes")
            if not np.isfinite(a["logits"]).all():
                raise self._fail(f"{split} logits contain NaN or Inf")
            if n and (a["labels"].min() < 0 or a["labels"].max() >= c):
                raise self._fail(f"{split} labels lie outside [0, {c})")
            if not np.array_equal(a["index"], np.arange(n)):
                raise self._fail(f"{split} rows are not in dataset order")

    def _check_expectations(self, e: CacheExpectations) -> None:
        checks = [
            ("dataset_fingerprint", e.dataset_fingerprint, self.attrs.get("dataset_fingerprint"),
             "was made from a different dataset"),
            ("teacher_fingerprint", e.teacher_fingerprint, self.attrs.get("teacher_fingerprint"),
             "was made by a different teacher"),
            ("num_classes", e.num_classes, self.num_classes, "has a different number of classes"),
            ("train_rows", e.train_rows, self.train_rows, "has a different number of training rows"),
        ]
        for name, want, got, what in checks:
            if want is not None and want != got:
                raise self._fail(f"{what} ({name} {got}, expected {want})")

    # --- reading --------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.attrs["num_classes"])

    @property
    def train_rows(self) -> int:
        return len(self._arrays["train"]["labels"])

    @property
    def temperature(self) -> float:
        return float(self.attrs["temperature"])

    @property
    def fingerprint(self) -> str:
        """Digest of what a student learns from: temperature and every split's arrays."""
        h = hashlib.sha256(repr(self.temperature).encode())
        for split in SPLITS:
            for name in ("logits", "labels", "index"):
                h.update(np.ascontiguousarray(self._arrays[split][name]).tobytes())
        return h.hexdigest()[:16]

    def labels(self, split: str = "train") -> np.ndarray:
        return self._arrays[split]["labels"]

    def logits(self, split: str = "train") -> torch.Tensor:
        """Teacher logits at temperature 1: (N, C) float32 (the stored values times the temperature)."""
        return torch.from_numpy(self._arrays[split]["logits"].astype(np.float32)) * self.temperature

    def soft_targets(self, T: float, split: str = "train") -> torch.Tensor:
        """softmax(z_stored * temperature / T): (N, C) float32, rows sum to 1."""
        return torch.softmax(self.logits(split) / T, dim=-1)

    def log_soft_targets(self, T: float, split: str = "train") -> torch.Tensor:
        """log_softmax(z_stored * temperature / T): (N, C) float32, for KL with log_target."""
        return torch.log_softmax(self.logits(split) / T, dim=-1)

    def teacher_accuracy(self, split: str = "test") -> float:
        """Accuracy of the cached teacher logits against the cached labels."""
        pred = self._arrays[split]["logits"].argmax(axis=1)
        return float((pred == self._arrays[split]["labels"]).mean())


def _plain(v):
    """h5py attribute values as plain Python values (numpy scalars and bytes unwrapped)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
