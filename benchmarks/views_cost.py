"""What cached views cost, as ratios measured side by side in one run.

1. Student epoch, same student, rows and batches, through the real ``train_student``:
   plain cross-entropy on clean images (the reference), cross-entropy on random
   crop+flip, KD from the clean image's logits on random crop+flip, KD replaying K
   cached views (each view and its logits), and KD replaying a mixup view bank (with
   the blended hard label, and KL only). Arms are interleaved and the best of
   ``--repeats`` is kept, so drift hits every arm alike.
2. Teacher pass and cache: the stage with VIEWS=K (and with MIXUP) vs VIEWS=1 (seconds and file size).

Usage: python benchmarks/views_cost.py [--rows N] [--views K] [--repeats R]
"""

from __future__ import annotations

import datetime as dt
import platform
import tempfile
from pathlib import Path

import click
import torch
from fixtures import dataset, throwaway_cache

from pipeline.cache.format import read_attrs
from pipeline.config import StudentConfig
from pipeline.student.distill import train_student

ARMS = {
    "CE, clean images": {"alpha": 0.0},
    "CE, random crop+flip": {"alpha": 0.0, "augment": True},
    "KD clean logits, random crop+flip": {"alpha": 0.5, "T": 2.0, "augment": True},
    "KD replayed views": {"alpha": 0.5, "T": 2.0, "replay": -1},
    "KD mixup bank": {"alpha": 0.5, "T": 2.0, "replay": -1, "bank": "mixup"},
    "KL only, mixup bank": {"alpha": 1.0, "T": 2.0, "replay": -1, "bank": "mixup"},
}


@click.command()
@click.option("--rows", default=60000, show_default=True, help="Training images.")
@click.option("--views", default=8, show_default=True, help="K views cached per image.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--students", default="mlp cnn-tiny", show_default=True)
def main(rows: int, views: int, repeats: int, students: str) -> None:
    data = dataset(rows)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared, plain = throwaway_cache(data, work, views=1)
        _, banked = throwaway_cache(data, work, views=views)
        _, mixed = throwaway_cache(data, work, views=views, mixup=1.0)
        pass_s = tuple(read_attrs(path)["pass_seconds"] for path in (plain, banked, mixed))
        size = (plain.stat().st_size, banked.stat().st_size, mixed.stat().st_size)
        results = {}
        for student in students.split():
            times = {arm: [] for arm in ARMS}
            for _ in range(repeats):
                for arm, kw in ARMS.items():
                    kw = {**kw, "replay": views} if kw.get("replay") else kw
                    cache = mixed if kw.pop("bank", None) == "mixup" else banked
                    cfg = StudentConfig(cache=cache, dataset=prepared, out_dir=work / "run", student=student,
                                        epochs=1, **kw)
                    times[arm].append(train_student(cfg, progress=False)["seconds_per_epoch"])
            results[student] = {arm: min(v) for arm, v in times.items()}

    print("## Cached views: student epoch and teacher pass (`benchmarks/views_cost.py`)\n")
    print(f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; {len(data.y_train)} training "
          f"images ({data.name}), K={views} views, best of {repeats} interleaved epochs per arm. "
          f"Command: `python benchmarks/views_cost.py --rows {rows} --views {views} --repeats {repeats}`.\n")
    print("| student | arm | s/epoch | vs CE on clean images | vs CE on random crop+flip |")
    print("|---|---|---:|---:|---:|")
    for student, best in results.items():
        ce, ce_aug = best["CE, clean images"], best["CE, random crop+flip"]
        for arm, s in best.items():
            print(f"| {student} | {arm} | {s:.2f} | {s / ce:.2f}x | {s / ce_aug:.2f}x |")
    n, m = len(data.y_train), len(data.y_test)
    print(f"\nTeacher pass (untrained `cnn` teacher, CPU): VIEWS=1 {pass_s[0]:.1f} s, VIEWS={views} "
          f"{pass_s[1]:.1f} s ({pass_s[1] / pass_s[0]:.2f}x for {(n * (views + 1) + m) / (n + m):.2f}x the rows), "
          f"with MIXUP=1 {pass_s[2]:.1f} s ({pass_s[2] / pass_s[0]:.2f}x); cache {size[0] / 1e6:.1f} MB vs "
          f"{size[1] / 1e6:.1f} MB ({size[1] / size[0]:.2f}x), with mixup {size[2] / 1e6:.1f} MB.")


if __name__ == "__main__":
    main()
