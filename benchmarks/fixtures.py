"""What the benchmarks train on: real Fashion-MNIST when it is installed (else random
images of the same shape), and a throwaway cache from a freshly initialised teacher.
Timing does not depend on how good the teacher is, so no benchmark waits for one to train."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import LogitsConfig
from pipeline.data.prepare import (
    DEBIAN_DIR,
    FASHION_MNIST_CLASSES,
    Dataset,
    limit_train,
    load_dataset,
    save_prepared,
)
from pipeline.models import create_teacher
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.training.checkpoint import save_checkpoint


def dataset(rows: int) -> Dataset:
    """The first ``rows`` Fashion-MNIST training images (all test images), or random ones."""
    try:
        return limit_train(load_dataset("fashion-mnist", None, Path("data/raw"), DEBIAN_DIR, download=False), rows)
    except Exception:
        rng = np.random.default_rng(0)
        return Dataset("random", rng.integers(0, 256, (rows, 1, 28, 28), dtype=np.uint8),
                       rng.integers(0, 10, rows), rng.integers(0, 256, (1000, 1, 28, 28), dtype=np.uint8),
                       rng.integers(0, 10, 1000), FASHION_MNIST_CLASSES)


def untrained_teacher(workdir: Path) -> tuple[torch.nn.Module, Path]:
    """The CPU teacher `cnn`, seed 0, saved as a softcache checkpoint."""
    torch.manual_seed(0)
    teacher = create_teacher("cnn")
    ckpt = workdir / "teacher.pt"
    save_checkpoint(ckpt, kind="teacher", arch="cnn", model=teacher,
                    model_kwargs={"in_shape": (1, 28, 28), "num_classes": 10}, config={}, metrics={"test_acc": 0.0})
    return teacher, ckpt


def throwaway_cache(data: Dataset, workdir: Path, views: int = 1, mixup: float = 0.0) -> tuple[Path, Path]:
    """Prepared dataset and a cache written by the real teacher-logits stage (with ``views``
    cached views per training image, mixup pairs when ``mixup`` > 0); returns both paths."""
    prepared, cache = workdir / "dataset.npz", workdir / f"cache-v{views}-mx{mixup:g}.h5"
    if not prepared.is_file():
        save_prepared(data, prepared)
    ckpt = workdir / "teacher.pt"
    if not ckpt.is_file():
        untrained_teacher(workdir)
    write_teacher_logits(LogitsConfig(teacher=ckpt, dataset=prepared, out=cache, device="cpu", views=views,
                                      mixup=mixup))
    return prepared, cache


def kill_and_rerun(command: list[str], seconds: float, pick: random.Random) -> bool:
    """Start ``command``, kill -9 it at a uniform random moment in [0.2, ``seconds``] s, then run it again to
    completion; True when it was still running at the kill (False: it had finished, the rerun redoes it)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(pick.uniform(0.2, seconds))
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(command, check=True, capture_output=True)
    return running
