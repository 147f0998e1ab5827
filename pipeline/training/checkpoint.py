"""Checkpoints: one dict per file, written atomically, read back with ``weights_only=True``.

The dict holds everything needed to rebuild the model without the code that trained it:
its registry name and constructor arguments (input shape, classes, normalisation), the
weights, the resolved config, the metrics, and a fingerprint of the weights that caches
and students use for provenance.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UsageError
from pipeline.files import atomic_path
from pipeline.models import create_lm, create_student, create_teacher

__all__ = ["CHECKPOINT_FORMAT", "model_fingerprint", "round_to_half", "save_checkpoint", "load_checkpoint", "read_checkpoint_file",
           "is_checkpoint"]

CHECKPOINT_FORMAT = "softcache-checkpoint-v1"
_FACTORIES = {"teacher": create_teacher, "student": create_student, "lm": create_lm}   # kind -> registry


def model_fingerprint(arch: str, model: nn.Module) -> str:
    """Digest of the architecture name and every tensor of the state dict, in key order."""
    h = hashlib.sha256(arch.encode())
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
                 if tensor.numel() else b"")
    return h.hexdigest()[:16]


@torch.no_grad()
def round_to_half(model: nn.Module) -> nn.Module:
    """Round the model's floating-point weights to float16 values, in place (they stay float32 tensors):
    what a checkpoint stored with ``half=True`` gives back."""
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(tensor.half())
    return model


def save_checkpoint(path: Path, *, kind: str, arch: str, model: nn.Module, model_kwargs: dict,
                    config: dict, metrics: dict, half: bool = False) -> str:
    """Write the checkpoint; returns the weights' fingerprint (also stored inside).

    ``half``: floating-point weights are stored in float16 (half the bytes, for a checkpoint that is
    committed). The model is rounded to them in place first, so the fingerprint is that of the weights
    any reader rebuilds: float16 values loaded into the float32 model."""
    if half:
        round_to_half(model)
    fingerprint = model_fingerprint(arch, model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "arch": arch,
        "model_kwargs": model_kwargs,
        "state_dict": _stored(model.state_dict(), half),
        "config": config,
        "metrics": metrics,
        "fingerprint": fingerprint,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return fingerprint


def _stored(state: dict, half: bool) -> dict:
    """The state dict as saved: on the CPU, floating point in float16 where ``half``. Tensors that share
    storage (tied input and output embeddings) stay shared, so torch.save writes them once: each is rounded
    once, not once per name (4 MB of a BPE teacher's 21 MB were a second copy of its embedding)."""
    rounded: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, value in state.items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
            value = rounded.setdefault(key, value.half())
        out[name] = value
    return out


def read_checkpoint_file(path: Path) -> object:
    """torch.load with weights_only=True (no pickled code runs); None when the file is not a
    plain torch.save archive (TorchScript and exported programs are not)."""
    try:
        with warnings.catch_warnings():   # torch.load remarks on TorchScript archives it is handed
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a file that is not a checkpoint
        return None


def is_checkpoint(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT


def load_checkpoint(path: Path, kind: str, fix: str, payload: object = None) -> tuple[nn.Module, dict]:
    """Rebuild the model in eval mode; refuse anything that is not a softcache ``kind`` checkpoint.

    ``fix``: the stage that rewrites it (named in the error, in the caller's terms);
    ``payload``: the file's contents when the caller has already read them."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{kind} checkpoint {path} is missing", fix=fix)
    ckpt = payload if payload is not None else read_checkpoint_file(path)
    if ckpt is None:
        raise UsageError(f"{path} is not a softcache checkpoint (not a torch.save file)", fix=fix)
    if not is_checkpoint(ckpt):
        raise UsageError(f"{path} is not a softcache checkpoint (no '{CHECKPOINT_FORMAT}' format tag)", fix=fix)
    if ckpt.get("kind") != kind:
        raise UsageError(f"{path} holds a {ckpt.get('kind')}, not a {kind}", fix=fix)
    kwargs = ckpt.get("model_kwargs")
    if not isinstance(kwargs, dict) or not isinstance(ckpt.get("arch"), str):
        raise UsageError(f"{path}: its architecture or model sizes are not recorded as softcache writes them", fix=fix)
    try:    # the recorded sizes are checked by the factory before a weight is allocated (create_lm, create_model)
        model = _FACTORIES[kind](ckpt["arch"], **kwargs)
    except UsageError as exc:    # e.g. a module:factory student whose code changed, or transformers missing
        raise UsageError(f"{path}: {exc}", fix=fix) from None
    except TypeError as exc:
        raise UsageError(f"{path}: its model sizes do not fit architecture '{ckpt['arch']}' ({exc})", fix=fix) from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise UsageError(f"{path}: weights do not fit architecture '{ckpt['arch']}' "
                         f"({str(exc).splitlines()[0]})", fix=fix) from None
    if model_fingerprint(ckpt["arch"], model) != ckpt.get("fingerprint"):
        raise UsageError(f"{path}: weights do not match their recorded fingerprint", fix=fix)
    return model.eval(), ckpt


def recorded_tokenizer(ckpt: dict) -> str | None:
    """The fingerprint of the tokenizer whose ids a language model reads, as its checkpoint records it: an LM
    student's run, softcache's LM teacher (its training text, or a published record's), or the tokenizer.json a
    Hugging Face folder ships (its loader's record); None where nothing says."""
    metrics = ckpt.get("metrics") or {}
    if metrics.get("tokenizer_fingerprint"):
        return str(metrics["tokenizer_fingerprint"])
    for text in (metrics.get("text"), (metrics.get("published") or {}).get("text")):
        if isinstance(text, dict) and text.get("tokenizer_fingerprint"):
            return str(text["tokenizer_fingerprint"])
    return ckpt.get("tokenizer_fingerprint")
