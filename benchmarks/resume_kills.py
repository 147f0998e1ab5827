"""Crash-resume check for the teacher pass: kill -9 at random moments, resume, compare.

Each trial starts `softcache teacher-logits`, kills it with SIGKILL after a random delay
(anywhere from start-up to the final rename), runs the same command again to completion,
and compares every dataset of the result with an uninterrupted run's. A trial whose
process finished before the kill still counts, as a match only if its file is right.

Usage: python benchmarks/resume_kills.py [--trials 20]
"""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from fixtures import kill_and_rerun

from pipeline.cache.format import read_arrays
from pipeline.config import TeacherConfig
from pipeline.data.prepare import FASHION_MNIST_CLASSES, Dataset, save_prepared
from pipeline.teacher.fit import train_teacher


def _read(path: Path) -> dict:
    return read_arrays(path)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@click.command()
@click.option("--trials", default=20, show_default=True)
@click.option("--rows", default=4000, show_default=True, help="Training images (random 28x28).")
def main(trials: int, rows: int) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_prepared(Dataset("random", rng.integers(0, 256, (rows, 1, 28, 28), dtype=np.uint8),
                              rng.integers(0, 10, rows), rng.integers(0, 256, (1000, 1, 28, 28), dtype=np.uint8),
                              rng.integers(0, 10, 1000), FASHION_MNIST_CLASSES), tmp / "d.npz")
        train_teacher(TeacherConfig(dataset=tmp / "d.npz", out_dir=tmp / "t", arch="cnn", epochs=1, device="cpu",
                                    threads=1), progress=False)
        cmd = [sys.executable, "-m", "stages.cli", "teacher-logits", "--teacher", str(tmp / "t" / "teacher.pt"),
               "--dataset", str(tmp / "d.npz"), "--device", "cpu", "--chunk-rows", "250"]
        start = time.perf_counter()
        subprocess.run([*cmd, "--out", str(tmp / "clean.h5")], check=True, capture_output=True)
        clean_seconds = time.perf_counter() - start
        reference = _read(tmp / "clean.h5")

        pick = random.Random(0)
        matched, killed_mid = 0, 0
        for trial in range(trials):
            target = tmp / f"trial{trial}.h5"
            killed_mid += kill_and_rerun([*cmd, "--out", str(target)], clean_seconds, pick)
            matched += _same(_read(target), reference)
            target.unlink()
    lines = [
        "## Teacher pass: kill -9 and resume",
        "",
        f"Measured {dt.date.today().isoformat()}, CPU, `python benchmarks/resume_kills.py --trials {trials}`: "
        f"{rows + 1000} images in chunks of 250, an uninterrupted pass takes {clean_seconds:.1f} s "
        "(process start included); each trial kills at a uniform random moment in that span.",
        "",
        "| trials | killed while running | resumed caches identical to the uninterrupted one |",
        "|---:|---:|---:|",
        f"| {trials} | {killed_mid} | {matched}/{trials} |",
        "",
    ]
    click.echo("\n".join(lines))
    sys.exit(0 if matched == trials else 1)


if __name__ == "__main__":
    main()
