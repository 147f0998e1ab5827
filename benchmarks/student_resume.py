"""Student runs that survive a kill: kill -9 at random moments and resume, and what checkpointing costs.

1. Each trial starts `softcache student`, kills it with SIGKILL after a random delay (from
   start-up to the final rename), runs the same command again to completion, and compares
   the weights with an uninterrupted run's (torch.equal on every tensor). A trial whose
   process finished before the kill still counts, as a match only if its weights are right.
2. The cost of the default cadence (CHECKPOINT_EVERY=1): the seconds spent saving the
   training state after an epoch, as a fraction of the epoch's training seconds, measured
   in the same runs (mlp and cnn-tiny, real Fashion-MNIST when installed).

Usage: python benchmarks/student_resume.py [--trials 10] [--rows N]
"""

from __future__ import annotations

import datetime as dt
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from fixtures import dataset, kill_and_rerun, throwaway_cache

from pipeline.config import StudentConfig
from pipeline.student.distill import train_student
from pipeline.training.resume import TrainingState
from pipeline.training.run_dir import MODEL_FILE


def _weights(run: Path) -> dict:
    return torch.load(run / MODEL_FILE, weights_only=True)["state_dict"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _save_cost(prepared: Path, cache: Path, work: Path, student: str, epochs: int) -> tuple[float, float]:
    """(seconds per state save, training seconds per epoch) of one run at the default cadence."""
    saves: list[float] = []
    real = TrainingState.save

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        real(self, *args, **kwargs)
        saves.append(time.perf_counter() - start)

    TrainingState.save = timed
    try:
        m = train_student(StudentConfig(cache=cache, dataset=prepared, out_dir=work / f"cost-{student}",
                                        student=student, epochs=epochs, alpha=0.5, augment=True), progress=False)
    finally:
        TrainingState.save = real
    return sum(saves) / len(saves), m["seconds_per_epoch"]


@click.command()
@click.option("--trials", default=10, show_default=True)
@click.option("--rows", default=6000, show_default=True, help="Training images of the kill trials.")
def main(trials: int, rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared, cache = throwaway_cache(dataset(rows), work / "small")
        cmd = [sys.executable, "-m", "stages.cli", "student", "--cache", str(cache), "--dataset", str(prepared),
               "--student", "cnn-tiny", "--epochs", "6", "--alpha", "0.5", "--augment", "--threads", "1"]
        start = time.perf_counter()
        subprocess.run([*cmd, "--out-dir", str(work / "whole")], check=True, capture_output=True)
        clean_seconds = time.perf_counter() - start
        reference = _weights(work / "whole")
        pick = random.Random(0)
        matched = killed_mid = 0
        for trial in range(trials):
            out = work / f"trial{trial}"
            killed_mid += kill_and_rerun([*cmd, "--out-dir", str(out)], clean_seconds, pick)
            matched += _same(_weights(out), reference)

        full_prepared, full_cache = throwaway_cache(dataset(60000), work / "full")
        costs = {s: _save_cost(full_prepared, full_cache, work, s, epochs=4) for s in ("mlp", "cnn-tiny")}

    print("## Student runs: kill -9 and resume, and the cost of checkpointing (`benchmarks/student_resume.py`)\n")
    print(f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, torch {torch.__version__}. "
          f"Command: `python benchmarks/student_resume.py --trials {trials} --rows {rows}`.\n")
    print(f"Kill trials: cnn-tiny, 6 epochs on {rows} images, 1 thread; an uninterrupted run takes "
          f"{clean_seconds:.1f} s (process start included), and each trial kills at a uniform random moment in "
          "that span, then runs the same command again.\n")
    print("| trials | killed while running | resumed runs with weights torch.equal to the uninterrupted run |")
    print("|---:|---:|---:|")
    print(f"| {trials} | {killed_mid} | {matched}/{trials} |\n")
    print(f"Checkpoint cost at the default cadence (CHECKPOINT_EVERY=1), 60,000 images, crop+flip, KD, "
          f"{torch.get_num_threads()} torch threads, 4 epochs (3 saves):\n")
    print("| student | s per save | training s per epoch | save / epoch |")
    print("|---|---:|---:|---:|")
    for student, (save, epoch) in costs.items():
        print(f"| {student} | {save:.4f} | {epoch:.2f} | {100 * save / epoch:.2f}% |")
    sys.exit(0 if matched == trials else 1)


if __name__ == "__main__":
    main()
