"""Tiny generated fixtures: a 3-class dataset of 12x12 images whose classes are separable
(a bright block in a class-specific place), so a few training steps really learn."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import LogitsConfig, TeacherConfig
from pipeline.data.prepare import Dataset, save_prepared
from pipeline.teacher.fit import train_teacher
from pipeline.teacher.logits_pass import write_teacher_logits

SHAPE = (1, 12, 12)
CLASSES = ("left", "middle", "right")


def make_dataset(n_train: int = 96, n_test: int = 48, seed: int = 0, name: str = "tiny") -> Dataset:
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, len(CLASSES), n)
        x = rng.integers(0, 60, (n, *SHAPE), dtype=np.uint8)
        for i, label in enumerate(y):
            x[i, :, 3:9, 4 * label: 4 * label + 4] += 180
        return x, y.astype(np.int64)

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return Dataset(name, x_train, y_train, x_test, y_test, CLASSES)


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()


@pytest.fixture
def prepared(tmp_path: Path, tiny_dataset: Dataset) -> Path:
    path = tmp_path / "dataset" / "tiny.npz"
    save_prepared(tiny_dataset, path)
    return path


@pytest.fixture
def teacher_dir(tmp_path: Path, prepared: Path) -> Path:
    out = tmp_path / "teacher"
    train_teacher(TeacherConfig(dataset=prepared, out_dir=out, arch="cnn", epochs=2, device="cpu",
                                batch_size=32), progress=False)
    return out


@pytest.fixture
def cache_file(tmp_path: Path, prepared: Path, teacher_dir: Path) -> Path:
    out = tmp_path / "cache" / "tiny.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=out,
                                      device="cpu"))
    return out


@pytest.fixture
def student_run(tmp_path: Path, prepared: Path, cache_file: Path) -> Path:
    """A finished cnn-tiny run directory (model.pt + metrics.json) on the tiny dataset."""
    from pipeline.config import StudentConfig
    from pipeline.student.distill import train_student

    out = tmp_path / "runs" / "cnn-tiny-T4-a0.9-s0-e3"
    train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=out, student="cnn-tiny",
                                epochs=3, batch_size=16), progress=False)
    return out


def _mount_refused() -> str | None:
    """Why a private tmpfs cannot be mounted here (None: it can)."""
    try:
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")


def pytest_collection_modifyitems(config, items):
    """needs_mount tests are deselected, loudly, where the machine refuses a private mount: never skipped
    in silence, never failing for the machine's policy."""
    wanted = [item for item in items if item.get_closest_marker("needs_mount")]
    reason = _mount_refused() if wanted else None
    if reason is None:
        return
    config.hook.pytest_deselected(items=wanted)
    items[:] = [item for item in items if item not in wanted]
    config._softcache_deselected = (len(wanted), reason)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    deselected = getattr(config, "_softcache_deselected", None)
    if deselected is None and getattr(config.option, "numprocesses", None):   # pytest-xdist: the workers collected
        reason = _mount_refused()
        deselected = ("the", reason) if reason else None
    if deselected:
        terminalreporter.write_line(f"DESELECTED {deselected[0]} full-disk tests: this machine refuses a private "
                                    f"tmpfs mount (unshare -rm: {deselected[1]})", yellow=True, bold=True)
