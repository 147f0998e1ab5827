"""Inference batch size on the CPU: why the teacher pass (and every eval-mode forward) uses 64 rows, not 1024.

A GPU wants large batches to fill it; a CPU is fastest when a batch's activations stay in its
caches. For each model the same images go through ``pipeline.training.loop.predict`` at every batch size,
interleaved over repeats (best of), and the table gives images/s and the ratio to batch 1024. The
models are freshly initialised: speed does not depend on the weights.

Usage: python benchmarks/inference_batch.py [--images 4096] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import dataset  # noqa: E402

from pipeline.models import create_student, create_teacher  # noqa: E402
from pipeline.training.loop import CPU_INFERENCE_BATCH, predict  # noqa: E402

BATCHES = (32, 64, 128, 256, 1024)


def _resized(x: np.ndarray, size: int) -> torch.Tensor:
    """Fashion-MNIST upscaled to size x size and repeated to RGB: a larger image of the same content."""
    t = torch.from_numpy(x).float()
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)


@click.command()
@click.option("--images", default=4096, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--threads", default=2, show_default=True)
def main(images: int, repeats: int, threads: int) -> None:
    torch.set_num_threads(threads)
    data = dataset(images)
    x28 = torch.from_numpy(data.x_train[:images])
    torch.manual_seed(0)
    cases = [("cnn (teacher, 140k)", create_teacher("cnn").eval(), x28),
             ("cnn-tiny, 28x28 grey", create_student("cnn-tiny").eval(), x28),
             ("cnn-tiny, 64x64 RGB", create_student("cnn-tiny", in_shape=(3, 64, 64)).eval(), _resized(x28.numpy(), 64)),
             ("resnet18 (teacher, 11M)", create_teacher("resnet18").eval(), x28[:images // 4])]
    rows = []
    for name, model, x in cases:
        predict(model, x[:256], 64)                      # warm-up
        best = {b: float("inf") for b in BATCHES}
        for _ in range(repeats):
            for b in BATCHES:
                start = time.perf_counter()
                predict(model, x, b)
                best[b] = min(best[b], time.perf_counter() - start)
        rows.append((name, len(x), {b: len(x) / s for b, s in best.items()}))
    print("## Inference batch on the CPU (`benchmarks/inference_batch.py`)\n")
    print(f"{dt.date.today()}, {platform.machine()}, {threads} torch threads, torch {torch.__version__}; "
          f"`python benchmarks/inference_batch.py --images {images} --repeats {repeats} --threads {threads}`; "
          f"data: {data.name}; best of {repeats} interleaved repeats. softcache's CPU default is "
          f"{CPU_INFERENCE_BATCH} (`pipeline.training.loop.inference_batch`); a GPU keeps 1024.\n")
    print("| model | images | " + " | ".join(f"batch {b} img/s" for b in BATCHES) + " | 64 vs 1024 |")
    print("|---|---:|" + "---:|" * len(BATCHES) + "---:|")
    for name, n, rate in rows:
        print(f"| {name} | {n} | " + " | ".join(f"{rate[b]:,.0f}" for b in BATCHES)
              + f" | {rate[64] / rate[1024]:.2f}x |")


if __name__ == "__main__":
    main()
