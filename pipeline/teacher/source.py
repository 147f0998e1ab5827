"""Where the teacher pass gets its teacher: softcache's own checkpoint, or the user's.

A user's teacher can be a TorchScript file (``torch.jit.save``), an exported program
(``torch.export.save``, ``.pt2``, loaded only when its index shows nothing to unpickle:
``pipeline.teacher.pt2_archive``), or ``package.module:factory`` plus a weights file that is read
with ``weights_only=True``. A file is data and never runs code; ``module:factory`` is code the
user named, so softcache imports and runs it, and anything it does on the way (an exception,
a syntax error, ``sys.exit``) becomes one line. Whatever its form, the teacher
receives float32 images in [0, 1] shaped (N, C, H, W), the same input softcache's own
models and exports take, and must return (N, classes) logits. Its fingerprint (a digest
of the file, or of the weights for a factory) goes into the cache like ours does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from pipeline.errors import UsageError
from pipeline.models.user_module import call_factory, first_line, import_factory
from pipeline.teacher.pt2_archive import unsafe_entries
from pipeline.training.checkpoint import (
    is_checkpoint,
    load_checkpoint,
    model_fingerprint,
    read_checkpoint_file,
)

__all__ = ["TeacherSource", "load_teacher", "check_output_width", "check_batch_output"]



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
    import_factory(spec, "TEACHER")           # a module that does not import is said before missing weights
    if weights is None or not Path(weights).is_file():
        raise UsageError(f"TEACHER={spec} needs its weights: TEACHER_WEIGHTS=<file saved with torch.save(state_dict)>")
    model = call_factory(spec, "TEACHER")
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


def _archive_kind(path: Path) -> str | None:
    """What a zip archive written by torch holds, from its entries (no loader is tried): TorchScript
    code, a torch.export program, or a plain ``torch.save`` pickle (which softcache never unpickles:
    unpickling runs arbitrary code)."""
    with zipfile.ZipFile(path) as archive:
        entries = {name.split("/", 1)[-1] for name in archive.namelist()}
    if "archive_format" in entries:
        return "exported program"
    if "constants.pkl" in entries or any(name.startswith("code/") for name in entries):
        return "TorchScript"
    if "data.pkl" in entries:
        return "pickle"
    return None


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch's loaders log warnings and tracebacks of their own when a file is not what they read;
    the one-line error that follows says everything the user needs."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _from_file(path: Path) -> TeacherSource:
    kind = _archive_kind(path) if zipfile.is_zipfile(path) else None
    if kind is None:
        raise UsageError(f"TEACHER={path} is not a model file (not a softcache checkpoint, a TorchScript "
                         f"file or a torch.export .pt2 program)")
    if kind == "pickle":
        raise UsageError(f"TEACHER={path} is a pickled model (torch.save of a module), which softcache does not "
                         f"unpickle because unpickling runs code; save it with torch.jit.save(torch.jit.script(m)) "
                         f"or torch.export.save, or give TEACHER=module:factory with TEACHER_WEIGHTS")
    if kind == "exported program":
        try:
            unsafe = unsafe_entries(path)
        except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
            unsafe = [f"an unreadable archive ({first_line(exc)})"]
        if unsafe:
            raise UsageError(f"TEACHER={path} is an exported program that holds {unsafe[0]}"
                             f"{f' (and {len(unsafe) - 1} more)' if len(unsafe) > 1 else ''}, which loading would "
                             f"unpickle or run; softcache loads only plain-tensor programs: export the model again "
                             f"with plain tensors and torch.export.save, or give TEACHER=module:factory")
    try:
        with _quiet_torch():
            model = (torch.jit.load(str(path), map_location="cpu") if kind == "TorchScript"
                     else _ExportedProgram(torch.export.load(str(path)).module()))
    except Exception as exc:  # each loader raises its own types for a damaged file
        raise UsageError(f"TEACHER={path} looks like a {kind} file but does not load ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from None
    if isinstance(model, torch.jit.ScriptModule):
        model.eval()
    return TeacherSource(model, path.name, _file_digest(path), None)


def check_output_width(source: TeacherSource, example: torch.Tensor, num_classes: int) -> None:
    """Run the teacher on batches of 2 and 3 images (``example`` holds at least 3) and refuse it unless it
    returns (N, num_classes) logits for both: a program exported with a fixed batch size fails here, in
    one line, rather than in the middle of the pass."""
    for batch in (example[:2], example[:3]):
        try:
            with torch.no_grad(), _quiet_torch():
                out = source.model(batch)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise UsageError(f"teacher {source.name} fails on a batch of the dataset's images {tuple(batch.shape)} "
                             f"({type(exc).__name__}: {message}); it must take any batch size (an exported program "
                             f"needs a dynamic batch dimension, torch.export.Dim)") from None
        if not isinstance(out, torch.Tensor) or out.shape != (len(batch), num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(f"teacher {source.name} returns {shape} for {len(batch)} images but the dataset has "
                             f"{num_classes} classes; it must return ({len(batch)}, {num_classes}) logits")


def check_batch_output(name: str, out, rows: tuple[int, int], split: str, num_classes: int) -> None:
    """One batch of the teacher pass: a floating (B, num_classes) tensor of finite logits, or a one-line
    error naming the rows; the pass then stops, and nothing is marked complete."""
    lo, hi = rows
    where = f"teacher {name} on {split} rows {lo}-{hi - 1}"
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        what = f"a {out.dtype} tensor" if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"{where} returned {what}; it must return floating-point logits")
    if out.shape != (hi - lo, num_classes):
        raise UsageError(f"{where} returned shape {tuple(out.shape)}; it must return ({hi - lo}, {num_classes}) "
                         f"logits for every batch")
    if not torch.isfinite(out).all():
        raise UsageError(f"{where} returned NaN or Inf logits; fix the teacher (its weights or its numerics), "
                         f"and run the pass again")


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
