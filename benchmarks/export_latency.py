"""Edge inference: eager PyTorch vs TorchScript vs ONNX Runtime vs int8 ONNX Runtime, side
by side in one run, for every student in the registry; batch 1 and 64, one thread (the
edge-like case) and all threads.

Latency does not depend on the weights' values, so each student is freshly initialised
(seed 0) and exported through the same functions `softcache export` uses; the int8 model
is calibrated on real Fashion-MNIST training images when they are installed. Accuracy
of the exported forms is a property of a trained run: `make export` measures it on the
whole test set and `make report` lists it.

Usage: python benchmarks/export_latency.py [--seconds S]
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import tempfile
from pathlib import Path

import click
import numpy as np
import torch

from pipeline.data.prepare import DEBIAN_DIR, load_dataset
from pipeline.models import count_params, create_student
from pipeline.models.images import image_students
from pipeline.results.export import export_onnx, export_torchscript, quantize_int8
from pipeline.results.latency import (
    eager_runner,
    median_latency_us,
    onnx_runner,
    torchscript_runner,
)

FORMS = ("eager", "torchscript", "onnx", "int8")


def _calibration_images() -> tuple[np.ndarray, str]:
    try:
        data = load_dataset("fashion-mnist", None, Path("data/raw"), DEBIAN_DIR, download=False)
        return data.x_train[:1024].astype(np.float32) / 255, "Fashion-MNIST"
    except Exception:
        return np.random.default_rng(0).random((1024, 1, 28, 28), dtype=np.float32), "random images"


def bench_student(name: str, calibration: np.ndarray, tmp: Path, seconds: float) -> dict:
    torch.manual_seed(0)
    model = create_student(name).eval()
    meta = {"student": name, "class_names": [str(i) for i in range(10)]}
    example = torch.from_numpy(calibration[:2])
    export_onnx(model, example, tmp / f"{name}.onnx", meta)
    export_torchscript(model, example, tmp / f"{name}.pt", meta)
    quantize_int8(tmp / f"{name}.onnx", tmp / f"{name}.int8.onnx", calibration, meta)
    sizes = {f: (tmp / f"{name}{suffix}").stat().st_size
             for f, suffix in (("onnx", ".onnx"), ("torchscript", ".pt"), ("int8", ".int8.onnx"))}
    latency = {}
    all_threads = os.cpu_count() or 1
    for threads in (1, all_threads):
        torch.set_num_threads(threads)
        runners = {"eager": eager_runner(model), "torchscript": torchscript_runner(tmp / f"{name}.pt"),
                   "onnx": onnx_runner(tmp / f"{name}.onnx", threads),
                   "int8": onnx_runner(tmp / f"{name}.int8.onnx", threads)}
        for batch in (1, 64):
            x = calibration[:batch]
            # Interleave the forms so that machine noise hits all of them alike.
            for form in FORMS:
                latency[(threads, batch, form)] = median_latency_us(runners[form], x, seconds=seconds)
    torch.set_num_threads(all_threads)
    return {"student": name, "params": count_params(model), "sizes": sizes, "latency": latency,
            "threads": (1, all_threads)}


@click.command()
@click.option("--seconds", default=0.5, show_default=True, help="Timing budget per (form, batch, threads) cell.")
def main(seconds: float) -> None:
    calibration, source = _calibration_images()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_student(name, calibration, Path(tmp), seconds) for name in image_students()]

    lines = [
        "## Edge inference: eager vs TorchScript vs ONNX Runtime vs int8 (CPU)",
        "",
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}; median µs per call; "
        f"int8 calibrated on {source}. Command: `make bench` (`python benchmarks/export_latency.py`).",
        "",
        "| student | params | threads | batch | eager µs | TorchScript µs | ONNX Runtime µs | int8 µs "
        "| ONNX RT / eager | int8 / eager |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for threads in r["threads"]:
            for batch in (1, 64):
                lat = {f: r["latency"][(threads, batch, f)] for f in FORMS}
                lines.append(f"| {r['student']} | {r['params']:,} | {threads} | {batch} | "
                             + " | ".join(f"{lat[f]:.0f}" for f in FORMS)
                             + f" | {lat['onnx'] / lat['eager']:.2f} | {lat['int8'] / lat['eager']:.2f} |")
    lines += [
        "",
        "| student | ONNX float32 bytes | TorchScript bytes | int8 ONNX bytes | int8 / float32 |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r['student']} | {r['sizes']['onnx']:,} | {r['sizes']['torchscript']:,} | {r['sizes']['int8']:,} | "
          f"{r['sizes']['int8'] / r['sizes']['onnx']:.3f} |" for r in results],
        "",
    ]
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
