"""Where the teacher pass gets its teacher: softcache's own checkpoint, or the user's.

A user's teacher can be a TorchScript file (``torch.jit.save``), an exported program
(``torch.export.save``, ``.pt2``), or ``package.module:factory`` plus a weights file that
is read with ``weights_only=True`` (no pickled code runs). Whatever its form, the teacher
receives float32 images in [0, 1] shaped (N, C, H, W), the same input softcache's own
models and exports take, and must return (N, classes) logits. Its fingerprint (a digest
of the file, or of the weights for a factory) goes into the cache like ours does.
"""

from __future__ import annotations

import hashlib
import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.checkpoint import is_checkpoint, load_checkpoint, model_fingerprint, read_checkpoint_file
from pipeline.errors import UsageError

__all__ = ["TeacherSource", "load_teacher", "check_output_width"]



@dataclass
class TeacherSource:
    model: nn.Module
    name: str                      # what the cache's 'teacher' attr says
    fingerprint: str
    test_acc: float | None         # as recorded by softcache's teacher stage; None for a user's teacher


def _file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def _from_factory(spec: str, weights: Path | None) -> TeacherSource:
    module_name, _, factory_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"TEACHER={spec}: cannot import '{factory_name}' from module '{module_name}' "
                         f"({type(exc).__name__}: {exc}); check the name and that the module is on PYTHONPATH") from None
    if weights is None or not Path(weights).is_file():
        raise UsageError(f"TEACHER={spec} needs its weights: TEACHER_WEIGHTS=<file saved with torch.save(state_dict)>")
    model = factory()
    if not isinstance(model, nn.Module):
        raise UsageError(f"TEACHER={spec}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise UsageError(f"TEACHER_WEIGHTS={weights} do not load into {spec} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None
    return TeacherSource(model.eval(), spec, model_fingerprint(spec, model), None)


class _ExportedProgram(nn.Module):
    """An exported program's module is already in inference form and refuses ``.eval()``;
    this wrapper hides it from nn.Module's recursion so the teacher pass can treat it like
    any model. The empty parameter only tells the pass which device the teacher is on."""

    def __init__(self, program_module):
        super().__init__()
        self._program = [program_module]                  # a list: not registered as a child
        self._device = nn.Parameter(torch.empty(0), requires_grad=False)

    def to(self, *args, **kwargs):
        self._program[0] = self._program[0].to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._program[0](x)


def _from_file(path: Path) -> TeacherSource:
    if not zipfile.is_zipfile(path):
        raise UsageError(f"TEACHER={path} is not a model file (not a softcache checkpoint, a TorchScript "
                         f"file or a torch.export .pt2 program)")
    errors = []
    for kind, load in (("TorchScript", lambda: torch.jit.load(str(path), map_location="cpu")),
                       ("exported program", lambda: _ExportedProgram(torch.export.load(str(path)).module()))):
        try:
            model = load()
            break
        except Exception as exc:  # each loader raises its own types for the other formats
            errors.append(f"{kind}: {type(exc).__name__}")
    else:
        raise UsageError(f"TEACHER={path} is not a model file ({'; '.join(errors)})")
    if isinstance(model, torch.jit.ScriptModule):
        model.eval()
    return TeacherSource(model, path.name, _file_digest(path), None)


def check_output_width(source: TeacherSource, example: torch.Tensor, num_classes: int) -> None:
    """Run the teacher on a couple of images and refuse it unless it returns (N, num_classes) logits."""
    try:
        with torch.no_grad():
            out = source.model(example)
    except Exception as exc:
        raise UsageError(f"teacher {source.name} fails on the dataset's images {tuple(example.shape)} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(out, torch.Tensor) or out.shape != (len(example), num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"teacher {source.name} returns {shape} for {len(example)} images but the dataset has "
                         f"{num_classes} classes; it must return ({len(example)}, {num_classes}) logits")


def load_teacher(spec: str | Path, weights: Path | None = None) -> TeacherSource:
    """Load the teacher named by ``spec``: a checkpoint or model file path, or module:factory."""
    text = str(spec)
    path = Path(text)
    if not path.exists() and ":" in text and not text.startswith((".", "/")):
        return _from_factory(text, weights)
    if not path.is_file():
        raise UsageError(f"teacher {path} is missing (or give TEACHER=<model file> or module:factory)", fix="teacher")
    payload = read_checkpoint_file(path)
    if is_checkpoint(payload):
        model, ckpt = load_checkpoint(path, "teacher", "teacher", payload)
        return TeacherSource(model, ckpt["arch"], ckpt["fingerprint"], float(ckpt["metrics"]["test_acc"]))
    return _from_file(path)
