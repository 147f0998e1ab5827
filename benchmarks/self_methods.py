"""What each self-distillation method costs per epoch against scratch, measured side by side in one run.

Same student, rows, batches and seed, through the real stages: scratch is the student stage at ALPHA=0
(a throwaway cache it never reads for the loss), PS-KD, BYOT and CS-KD are ``self_distill``. The figure is
each run's training seconds per epoch (PS-KD's end-of-epoch scoring of the training rows is outside it
and is stated apart). Arms are interleaved and the best of ``--repeats`` is kept, so drift hits every
arm alike. Issue 40's ceilings: the augmentation method (CS-KD) 2.2x scratch, the branch method (BYOT) 1.6x.

Usage: python benchmarks/self_methods.py [--rows N] [--epochs E] [--repeats R]
"""

from __future__ import annotations

import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import click
import torch
from fixtures import dataset, throwaway_cache

from pipeline.config import SelfDistillConfig, StudentConfig
from pipeline.student.distill import train_student
from pipeline.student.self_distill import METHOD_NAMES, self_distill

ARMS = ("scratch", "pskd", "byot", "cskd")


@click.command()
@click.option("--rows", default=12000, show_default=True, help="Training images.")
@click.option("--epochs", default=1, show_default=True)
@click.option("--repeats", default=2, show_default=True)
def main(rows: int, epochs: int, repeats: int) -> None:
    torch.set_num_threads(1)
    data = dataset(rows)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared, cache = throwaway_cache(data, work)
        best: dict[tuple[str, str], float] = {}
        walls: dict[tuple[str, str], float] = {}
        for student in ("cnn-tiny", "cnn-small"):
            for r in range(repeats):
                for arm in ARMS:
                    out = work / f"{student}-{arm}-{r}"
                    start = time.perf_counter()
                    if arm == "scratch":
                        m = train_student(StudentConfig(cache=cache, dataset=prepared, out_dir=out, student=student,
                                                        alpha=0.0, epochs=epochs, threads=1), progress=False)
                    else:
                        m = self_distill(SelfDistillConfig(dataset=prepared, out_dir=out, student=student, method=arm,
                                                           epochs=epochs, threads=1), progress=False)
                    wall = time.perf_counter() - start
                    key = (student, arm)
                    best[key] = min(best.get(key, float("inf")), m["seconds_per_epoch"])
                    walls[key] = min(walls.get(key, float("inf")), wall)
    print("## Self-distillation methods: cost per epoch against scratch (`benchmarks/self_methods.py`)\n")
    print(f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 thread, {rows:,} Fashion-MNIST rows, {epochs} epoch(s), best of {repeats}, arms interleaved. "
          "Training seconds per epoch; the whole run's wall time beside it (PS-KD scores its training rows after "
          "every epoch, outside the training figure).\n")
    print("| student | arm | s/epoch | vs scratch | run wall s | wall vs scratch |")
    print("|---|---|---:|---:|---:|---:|")
    for student in ("cnn-tiny", "cnn-small"):
        base, base_wall = best[(student, "scratch")], walls[(student, "scratch")]
        for arm in ARMS:
            name = "scratch (CE)" if arm == "scratch" else METHOD_NAMES[arm]
            s, w = best[(student, arm)], walls[(student, arm)]
            print(f"| {student} | {name} | {s:.2f} | {s / base:.2f}x | {w:.1f} | {w / base_wall:.2f}x |")


if __name__ == "__main__":
    main()
