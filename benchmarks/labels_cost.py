"""What few labels cost per student epoch, as ratios measured side by side in one run.

A distilled epoch with LABELS=N weighs its loss row by row (soft term alone on unlabelled
rows), which a full-label KD epoch does not; a transfer set adds rows. Arms, through the
real ``train_student`` on the same rows and batches: full-label KD (the reference),
KD with LABELS=N, KL only with LABELS=0, and scratch on the N labelled rows (far fewer
batches, shown for scale). Arms are interleaved and the best of ``--repeats`` is kept, so
drift hits every arm alike.

Usage: python benchmarks/labels_cost.py [--rows N] [--labels N] [--repeats R]
"""

from __future__ import annotations

import datetime as dt
import platform
import tempfile
from pathlib import Path

import click
import torch
from fixtures import dataset, throwaway_cache

from pipeline.config import StudentConfig
from pipeline.student.distill import train_student


@click.command()
@click.option("--rows", default=60000, show_default=True, help="Training images.")
@click.option("--labels", default=1200, show_default=True, help="N of the LABELS=N arm.")
@click.option("--repeats", default=5, show_default=True)
@click.option("--students", default="mlp cnn-tiny", show_default=True)
def main(rows: int, labels: int, repeats: int, students: str) -> None:
    arms = {
        "KD, every label": {"alpha": 0.5},
        f"KD, LABELS={labels}": {"alpha": 0.5, "labels": labels},
        "KL only, LABELS=0": {"alpha": 1.0, "labels": 0},
        f"scratch, LABELS={labels}": {"alpha": 0.0, "labels": labels},
    }
    data = dataset(rows)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared, cache = throwaway_cache(data, work)
        for student in students.split():
            times = {arm: [] for arm in arms}
            for _ in range(repeats):
                for arm, kw in arms.items():
                    cfg = StudentConfig(cache=cache, dataset=prepared, out_dir=work / "run", student=student,
                                        epochs=1, T=4.0, augment=True, **kw)
                    times[arm].append(train_student(cfg, progress=False)["seconds_per_epoch"])
            results[student] = {arm: min(v) for arm, v in times.items()}

    print("## Few labels: student epoch (`benchmarks/labels_cost.py`)\n")
    print(f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; {len(data.y_train)} training "
          f"images ({data.name}), random crop+flip, T=4, best of {repeats} interleaved epochs per arm. "
          f"Command: `python benchmarks/labels_cost.py --rows {rows} --labels {labels} --repeats {repeats}`.\n")
    print("| student | arm | s/epoch | vs KD with every label |")
    print("|---|---|---:|---:|")
    for student, best in results.items():
        reference = best["KD, every label"]
        for arm, s in best.items():
            print(f"| {student} | {arm} | {s:.3f} | {s / reference:.3f}x |")


if __name__ == "__main__":
    main()
