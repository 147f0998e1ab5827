"""The teacher pass: eval-mode inference over both splits, in dataset order, into the cache."""

from __future__ import annotations

import time

import torch

from pipeline.cache import write_cache
from pipeline.checkpoint import load_checkpoint
from pipeline.config import LogitsConfig, as_record, resolve_device
from pipeline.datasets import load_prepared
from pipeline.errors import UsageError
from pipeline.train import predict

__all__ = ["write_teacher_logits"]

_REBUILD_TEACHER = "run 'make teacher'"


def write_teacher_logits(cfg: LogitsConfig) -> dict:
    """Run the teacher once over train and test and write the cache; return a summary."""
    data = load_prepared(cfg.dataset)
    model, ckpt = load_checkpoint(cfg.teacher, "teacher", _REBUILD_TEACHER)
    if ckpt["model_kwargs"]["num_classes"] != data.num_classes:
        raise UsageError(f"teacher {cfg.teacher} predicts {ckpt['model_kwargs']['num_classes']} classes but "
                         f"the dataset has {data.num_classes}; {_REBUILD_TEACHER}")
    device = resolve_device(cfg.device)
    model.to(device)
    amp = device == "cuda"
    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
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
    with write_cache(cfg.out, rows={s: len(y) for s, (_, y) in splits.items()}, num_classes=data.num_classes,
                     temperature=cfg.temperature, attrs=attrs, dtype=cfg.dtype) as writer:
        for split, (x, y) in splits.items():
            for start_row in range(0, len(x), cfg.batch_size * 8):
                stop = min(start_row + cfg.batch_size * 8, len(x))
                logits = predict(model, torch.from_numpy(x[start_row:stop]), cfg.batch_size, amp=amp)
                writer.write(split, start_row, (logits / cfg.temperature).numpy(), y[start_row:stop],
                             torch.arange(start_row, stop).numpy())
    seconds = time.perf_counter() - start
    return {"path": str(cfg.out), "seconds": seconds, "rows": {s: len(y) for s, (_, y) in splits.items()},
            "images_per_second": sum(len(y) for _, y in splits.values()) / seconds, "config": as_record(cfg)}
