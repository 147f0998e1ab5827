"""The teacher pass: eval-mode inference over both splits, in dataset order, into the cache.

The pass is the expensive step, so a crash must not cost it all. It runs in fixed-size
row chunks, and each finished chunk's logits are saved (atomically) as one ``.npy`` in a
parts directory beside the cache. Running the same command again skips every chunk that
is there, and a chunk's values do not depend on which run computed it (same rows, same
batches), so a resumed cache is identical to an uninterrupted one. The parts are keyed
by teacher, dataset and chunking: a different teacher starts afresh. Only when every
chunk exists is the HDF5 file assembled, and it gets its final name last.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.cache import write_cache
from pipeline.checkpoint import load_checkpoint
from pipeline.config import LogitsConfig, as_record, resolve_device
from pipeline.datasets import load_prepared
from pipeline.errors import UsageError
from pipeline.files import atomic_path
from pipeline.train import predict

__all__ = ["write_teacher_logits", "parts_dir", "lock_path"]

_REBUILD_TEACHER = "run 'make teacher'"


def parts_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.parts"


def lock_path(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.lock"


@contextlib.contextmanager
def exclusive_writer(out: Path, what: str = "teacher pass") -> Iterator[None]:
    """Refuse a second writer of ``out`` while one runs (the OS drops the lock when its
    holder dies, so a killed pass never blocks the next)."""
    lock = lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another {what} is writing {out}; wait for it to finish or stop it") from None
        yield


class _Parts:
    """Finished chunks of the pass, one ``<split>-<chunk>.npy`` of float32 logits each."""

    def __init__(self, directory: Path, key: dict):
        self.dir = directory
        key_file = directory / "key.json"
        if directory.exists() and (not key_file.is_file() or json.loads(key_file.read_text()) != key):
            shutil.rmtree(directory)        # left by another teacher, dataset or chunking
        directory.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps(key, sort_keys=True))

    def path(self, split: str, chunk: int) -> Path:
        return self.dir / f"{split}-{chunk:06d}.npy"

    def save(self, split: str, chunk: int, logits: np.ndarray) -> None:
        with atomic_path(self.path(split, chunk)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, logits)

    def load(self, split: str, chunk: int) -> np.ndarray | None:
        path = self.path(split, chunk)
        return np.load(path) if path.is_file() else None


def write_teacher_logits(cfg: LogitsConfig) -> dict:
    """Run the teacher over train and test (resuming finished chunks) and write the cache."""
    data = load_prepared(cfg.dataset)
    model, ckpt = load_checkpoint(cfg.teacher, "teacher", _REBUILD_TEACHER)
    if ckpt["model_kwargs"]["num_classes"] != data.num_classes:
        raise UsageError(f"teacher {cfg.teacher} predicts {ckpt['model_kwargs']['num_classes']} classes but "
                         f"the dataset has {data.num_classes}; {_REBUILD_TEACHER}")
    if not cfg.topk < data.num_classes:
        raise UsageError(f"CACHE_TOPK={cfg.topk} must be below the {data.num_classes} classes (0 keeps all)")
    device = resolve_device(cfg.device)
    model.to(device)
    amp = device == "cuda"
    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    key = {"teacher": ckpt["fingerprint"], "dataset": data.fingerprint, "chunk_rows": cfg.chunk_rows,
           "batch_size": cfg.batch_size, "device": device}
    attrs = {
        "teacher": ckpt["arch"],
        "teacher_fingerprint": ckpt["fingerprint"],
        "dataset_fingerprint": data.fingerprint,
        "dataset": data.name,
        "teacher_test_acc": float(ckpt["metrics"]["test_acc"]),
        "producer": "softcache teacher-logits",
        "device": device,
        "class_names": list(data.class_names),
    }
    start = time.perf_counter()
    computed = 0
    with exclusive_writer(cfg.out):
        parts = _Parts(parts_dir(cfg.out), key)
        chunks = [(split, i, lo, min(lo + cfg.chunk_rows, len(y)))
                  for split, (_, y) in splits.items() for i, lo in enumerate(range(0, len(y), cfg.chunk_rows))]
        for split, i, lo, hi in chunks:
            if not parts.path(split, i).is_file():
                logits = predict(model, torch.from_numpy(splits[split][0][lo:hi]), cfg.batch_size, amp=amp)
                parts.save(split, i, logits.numpy())
                computed += hi - lo
        with write_cache(cfg.out, rows={s: len(y) for s, (_, y) in splits.items()}, num_classes=data.num_classes,
                         temperature=cfg.temperature, attrs=attrs, dtype=cfg.dtype, topk=cfg.topk) as writer:
            for split, i, lo, hi in chunks:
                writer.write(split, lo, parts.load(split, i) / cfg.temperature, splits[split][1][lo:hi],
                             np.arange(lo, hi))
        shutil.rmtree(parts.dir)
    seconds = time.perf_counter() - start
    rows = {s: len(y) for s, (_, y) in splits.items()}
    return {"path": str(cfg.out), "seconds": seconds, "rows": rows, "rows_computed": computed,
            "resumed_rows": sum(rows.values()) - computed,
            "images_per_second": sum(rows.values()) / seconds, "config": as_record(cfg)}
