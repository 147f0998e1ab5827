"""CPU inference runners for every exported form, and one way to time them.

The export stage and ``benchmarks/export_latency.py`` both time models through these
functions, so the latency in ``export.json`` and the one in BENCHMARKS.md are measured
the same way: float32 images in [0, 1] go in, logits come out as NumPy arrays.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline.errors import UsageError
from pipeline.teacher.pt2_archive import unsafe_entries

__all__ = ["Runner", "eager_runner", "pt2_runner", "torchscript_runner", "onnx_runner", "onnx_session", "median_latency_us"]

Runner = Callable[[np.ndarray], np.ndarray]


def eager_runner(model: nn.Module) -> Runner:
    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def pt2_runner(path: Path) -> Runner:
    """A .pt2 program, loaded only when its index shows nothing to unpickle or run (the check a teacher's
    .pt2 passes): softcache's own exports hold plain tensors, and a file swapped in is refused."""
    unsafe = unsafe_entries(path)
    if unsafe:
        raise UsageError(f"{path} holds {unsafe[0]}, which loading would unpickle or run; export it again")
    module = torch.export.load(str(path)).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return run


def torchscript_runner(path: Path) -> Runner:
    """TorchScript, which torch deprecates: read only where a user asks for the format (FORMATS=...torchscript)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)      # torch.jit.load's deprecation: said in the docs once
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return run


def onnx_session(path: Path, threads: int = 0):
    """An ONNX Runtime CPU session; threads=0 lets ONNX Runtime use every core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(path: Path, threads: int = 0) -> Runner:
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]
    return run


def median_latency_us(run: Runner, x: np.ndarray, seconds: float = 0.5, warmup: int = 10) -> float:
    """Median wall time of one call in microseconds, over as many calls as fit in ``seconds``
    (at least 20): the median shrugs off the scheduler hiccups of a shared machine."""
    for _ in range(warmup):
        run(x)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 20 or time.perf_counter() < deadline:
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6
