"""The teacher pass on the CPU: one process vs two ranks under torchrun, same data, same
teacher, each launched as the user would (`make teacher-logits` vs `NPROC=2`), so the wall
times include process start-up. One process uses every core through torch's threads;
two ranks use one thread each (torchrun's default) over half the chunks each.

Usage: python benchmarks/teacher_pass_procs.py [--rows N]
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from fixtures import dataset, untrained_teacher

from pipeline.data.prepare import save_prepared


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


@click.command()
@click.option("--rows", default=60000, show_default=True, help="Training images (plus every test image).")
def main(rows: int) -> None:
    data = dataset(rows)
    images = len(data.y_train) + len(data.y_test)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_prepared(data, tmp / "d.npz")
        _, ckpt = untrained_teacher(tmp)
        args = ["teacher-logits", "--teacher", str(ckpt), "--dataset", str(tmp / "d.npz"), "--device", "cpu"]
        one = _timed([sys.executable, "-m", "stages.cli", *args, "--out", str(tmp / "one.h5")])
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        two = _timed([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "stages.cli", *args,
                      "--out", str(tmp / "two.h5")])
    click.echo("\n".join([
        "## Teacher pass: 1 process vs 2 torchrun ranks (CPU teacher `cnn`)",
        "",
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}; data: {data.name}, {images} images; wall time of the whole command, start-up "
        "included. Command: `make bench` (`python benchmarks/teacher_pass_procs.py`).",
        "",
        "| launch | wall (s) | images/s | speedup |",
        "|---|---:|---:|---:|",
        f"| 1 process, {os.cpu_count()} threads | {one:.1f} | {images / one:.0f} | 1.00 |",
        f"| torchrun, 2 ranks x 1 thread (gloo) | {two:.1f} | {images / two:.0f} | {one / two:.2f} |",
        "",
    ]))


if __name__ == "__main__":
    main()
