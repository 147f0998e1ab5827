"""Compact cache storage: bytes per sample, file-size ratio, and what it costs a student.

Part A, Fashion-MNIST: the teacher's logits are computed once, then written as full
float32, full float16 and float16 top-k caches (the same writer the teacher-logits stage
uses). Students are trained from the full float32 cache and from each top-k cache with
the same seeds, recipe and epochs; the accuracy change is the paired difference.
Part B, a synthetic cache the size of ImageNet-1k (1,281,167 rows, 1000 classes):
full float32 vs float16 top-10, written chunk by chunk.

Usage: python benchmarks/cache_storage.py [--seeds 0 1 2] [--topk 2 --topk 3]
Needs `make teacher` (data/teacher/fashion-mnist/teacher.pt) for part A.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from pipeline.cache.format import write_cache
from pipeline.config import StudentConfig
from pipeline.data.prepare import load_prepared
from pipeline.student.distill import train_student
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.loop import predict

ATTRS = {"teacher_fingerprint": "", "dataset_fingerprint": "", "teacher": "", "teacher_test_acc": 0.0}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _write(path: Path, splits: dict, num_classes: int, dtype: str, topk: int, attrs: dict) -> int:
    with write_cache(path, rows={s: len(y) for s, (_, y) in splits.items()}, num_classes=num_classes,
                     temperature=1.0, attrs=attrs, dtype=dtype, topk=topk) as w:
        for split, (z, y) in splits.items():
            for lo in range(0, len(y), 65536):
                w.write(split, lo, z[lo:lo + 65536], y[lo:lo + 65536], np.arange(lo, min(lo + 65536, len(y))))
    return path.stat().st_size


def part_a(dataset: Path, teacher: Path, seeds: list[int], topks: list[int], student: str, epochs: int,
           tmp: Path) -> list[str]:
    data = load_prepared(dataset)
    model, ckpt = load_checkpoint(teacher, "teacher", "teacher")
    splits = {"train": (predict(model, torch.from_numpy(data.x_train)).numpy(), data.y_train),
              "test": (predict(model, torch.from_numpy(data.x_test)).numpy(), data.y_test)}
    attrs = {**ATTRS, "teacher_fingerprint": ckpt["fingerprint"], "dataset_fingerprint": data.fingerprint,
             "teacher": ckpt["arch"], "teacher_test_acc": ckpt["metrics"]["test_acc"]}
    rows = len(data.y_train) + len(data.y_test)
    variants = [("float32", 0), ("float16", 0), *[("float16", k) for k in topks]]
    sizes = {v: _write(tmp / f"{v[0]}-{v[1]}.h5", splits, data.num_classes, *v, attrs) for v in variants}
    full = sizes[("float32", 0)]

    acc: dict[tuple, list[float]] = {}
    for v in [("float32", 0), *[("float16", k) for k in topks]]:
        acc[v] = [100 * train_student(StudentConfig(cache=tmp / f"{v[0]}-{v[1]}.h5", dataset=dataset,
                                                    out_dir=tmp / "runs" / f"{v}-{s}", student=student,
                                                    seed=s, epochs=epochs), progress=False)["test_acc"]
                  for s in seeds]
    lines = [f"Teacher `{ckpt['arch']}` ({100 * ckpt['metrics']['test_acc']:.2f}%), {rows} rows (train + test), "
             f"{data.num_classes} classes. Student `{student}`, {epochs} epochs, T=4, ALPHA=0.9, seeds {seeds}.",
             "",
             "| storage | file (bytes) | bytes/sample | size vs full float32 | student test acc % (mean ± std) "
             "| paired Δ vs full float32 (pp) |",
             "|---|---:|---:|---:|---:|---:|"]
    for v in variants:
        name = f"{v[0]} " + (f"top-{v[1]} + tail" if v[1] else "full")
        if v in acc:
            a = acc[v]
            diffs = [x - y for x, y in zip(a, acc[("float32", 0)])]
            acc_s = f"{statistics.fmean(a):.2f} ± {_std(a):.2f}"
            delta = "—" if v == ("float32", 0) else f"{statistics.fmean(diffs):+.2f} ± {_std(diffs):.2f}"
        else:
            acc_s, delta = "not trained", "—"
        lines.append(f"| {name} | {sizes[v]:,} | {sizes[v] / rows:.1f} | {sizes[v] / full:.3f} | {acc_s} | {delta} |")
    return lines


def part_b(rows: int, classes: int, k: int, tmp: Path) -> list[str]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, rows)
    results = {}
    for dtype, topk in (("float32", 0), ("float16", k)):
        path = tmp / f"big-{dtype}-{topk}.h5"
        start = time.perf_counter()
        with write_cache(path, rows={"train": rows, "test": 0}, num_classes=classes, temperature=1.0,
                         attrs=ATTRS, dtype=dtype, topk=topk) as w:
            gen = np.random.default_rng(1)      # same logits for both files
            for lo in range(0, rows, 16384):
                hi = min(lo + 16384, rows)
                w.write("train", lo, gen.standard_normal((hi - lo, classes), dtype=np.float32) * 3,
                        labels[lo:hi], np.arange(lo, hi))
        results[(dtype, topk)] = (path.stat().st_size, time.perf_counter() - start)
        path.unlink()
    full = results[("float32", 0)][0]
    size_note = " (the size of ImageNet-1k's training set)" if rows == 1_281_167 else ""
    lines = [f"Synthetic cache, {rows:,} rows x {classes} classes{size_note}, Gaussian logits.",
             "", "| storage | file (bytes) | bytes/sample | size vs full float32 | write time (s) |",
             "|---|---:|---:|---:|---:|"]
    for (dtype, topk), (size, secs) in results.items():
        name = f"{dtype} " + (f"top-{topk} + tail" if topk else "full")
        lines.append(f"| {name} | {size:,} | {size / rows:.1f} | {size / full:.4f} | {secs:.0f} |")
    return lines


@click.command()
@click.option("--dataset", type=click.Path(path_type=Path), default=Path("data/dataset/fashion-mnist.npz"))
@click.option("--teacher", type=click.Path(path_type=Path), default=Path("data/teacher/fashion-mnist/teacher.pt"))
@click.option("--seeds", multiple=True, type=int, default=(0, 1, 2))
@click.option("--topk", "topks", multiple=True, type=int, default=(2, 3))
@click.option("--student", default="cnn-tiny")
@click.option("--epochs", default=5)
@click.option("--big-rows", default=1_281_167)
def main(dataset, teacher, seeds, topks, student, epochs, big_rows):
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        lines = ["## Cache storage: full vs float16 top-k", "",
                 f"Measured {dt.date.today().isoformat()}, CPU, `python benchmarks/cache_storage.py`.", ""]
        lines += part_a(dataset, teacher, list(seeds), list(topks), student, epochs, Path(tmp))
        click.echo("\n".join(lines), err=True)          # part A takes minutes: show it at once
        lines += ["", *part_b(big_rows, 1000, 10, Path(tmp)), ""]
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
