"""A run directory: what a finished student run holds, and the helpers every kind of run shares.

The student stage, self-distillation, export and sweeps all read and write runs through
this module, so a run looks the same whoever made it: ``model.pt`` (the checkpoint) and
``metrics.json``, written together in one atomic step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from pipeline.data.prepare import Dataset
from pipeline.files import atomic_dir, disk_full_is_one_line, need_space, write_json
from pipeline.models import create_student, create_teacher, student_build_record
from pipeline.provenance import code_version
from pipeline.training.calibration import reliability
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.loop import accuracy

__all__ = ["MODEL_FILE", "METRICS_FILE", "model_kwargs", "build_student", "build_teacher", "evaluate", "save_run"]

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


def model_kwargs(data: Dataset) -> dict:
    """What every registered model is built from: input shape, classes, the training split's statistics."""
    mean, std = data.normalization()
    return {"in_shape": data.image_shape, "num_classes": data.num_classes, "mean": mean, "std": std}


def build_student(name: str, data: Dataset, seed: int) -> tuple[torch.nn.Module, dict]:
    """The student ``name`` names (any source: :mod:`pipeline.models`), initialised from ``seed``, normalising
    with the training split's statistics; and what its checkpoint needs to rebuild it."""
    kwargs = model_kwargs(data)
    torch.manual_seed(seed)
    model = create_student(name, **kwargs)
    return model, {**kwargs, **student_build_record(name)}


def build_teacher(arch: str, data: Dataset, seed: int) -> tuple[torch.nn.Module, dict]:
    """The registered teacher, built as a student is."""
    kwargs = model_kwargs(data)
    torch.manual_seed(seed)
    return create_teacher(arch, **kwargs), kwargs


def evaluate(test_logits: torch.Tensor, data: Dataset) -> dict:
    """Test accuracy and calibration (ECE and reliability bins) from the test-set logits."""
    y_test = torch.from_numpy(data.y_test)
    calibration = reliability(test_logits, y_test)
    return {"test_acc": accuracy(test_logits, y_test), "ece": calibration["ece"], "reliability": calibration}


def save_run(out_dir: Path, arch: str, model: torch.nn.Module, model_kwargs: dict, config: dict, metrics: dict,
             extra_files: dict[str, Path] | None = None, kind: str = "student", write_extra=None) -> None:
    """Write the run directory in one atomic step: model.pt, metrics.json (with the
    checkpoint's size added) and any extra files, moved in. ``write_extra(tmp)`` writes more into the run
    before its metrics (which it may add to) are written."""
    metrics.update(code_version())
    need = 2 * sum(t.numel() * t.element_size() for t in model.state_dict().values()) + (1 << 20)
    need_space(Path(out_dir).parent, need)
    with disk_full_is_one_line(out_dir, need), atomic_dir(out_dir) as tmp:
        save_checkpoint(tmp / MODEL_FILE, kind=kind, arch=arch, model=model,
                        model_kwargs=model_kwargs, config=config, metrics=metrics)
        metrics["size_bytes"] = (tmp / MODEL_FILE).stat().st_size
        for name, path in (extra_files or {}).items():
            shutil.copyfile(path, tmp / name)
        if write_extra is not None:
            write_extra(tmp)
        write_json(tmp / METRICS_FILE, metrics)
