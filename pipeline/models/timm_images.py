"""Image students from the timm zoo: ``STUDENT=timm:<architecture>``, e.g. ``timm:mobilenetv3_small_050``.

timm builds the architecture for the dataset's channels and classes (``in_chans``, ``num_classes``) with
``pretrained=False``: softcache never downloads weights. Like softcache's own models the student starts with a
:class:`~pipeline.models.images.Normalize` layer, so it takes raw images in [0, 1] and an export needs
nothing else. Some architectures only take a fixed size or a minimum one (a ViT's patch grid); that is found
with one image before any training, and said with the ``IMAGE_SIZE`` that works.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from pipeline.errors import UsageError
from pipeline.models.images import Normalize, image_stats

__all__ = ["build_timm_student", "smallest_size"]

_SIZES = (32, 48, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384)


def _timm():
    try:
        import timm
    except ImportError:
        raise UsageError("STUDENT=timm:<name> needs timm: pip install 'softcache[timm]'") from None
    return timm


def _create(timm, name: str, channels: int, num_classes: int) -> nn.Module:
    return timm.create_model(name, pretrained=False, in_chans=channels, num_classes=num_classes)


def _takes(model: nn.Module, shape: tuple) -> bool:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
        return True
    except (RuntimeError, AssertionError, ValueError):
        return False
    finally:
        model.train()


def smallest_size(model: nn.Module, channels: int, default: tuple | None) -> int | None:
    """The smallest square size from a list of usual ones that the model takes (its default size first
    when it only takes that one), or None when none of them works."""
    if default and _takes(model, (channels, *default[-2:])) and not _takes(model, (channels, 32, 32)):
        return int(default[-1])
    return next((s for s in _SIZES if _takes(model, (channels, s, s))), None)


def build_timm_student(name: str, *, in_shape, num_classes: int, mean=None, std=None) -> nn.Module:
    timm = _timm()
    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        raise UsageError(f"STUDENT=timm:{name}: timm {timm.__version__} has no architecture '{name}'"
                         + (f"; the nearest are {', '.join(near)}" if near else "; list them with timm.list_models()"))
    channels = int(in_shape[0])
    try:
        body = _create(timm, name, channels, num_classes)
    except Exception as exc:     # timm and the architecture raise many types for arguments they refuse
        raise UsageError(f"STUDENT=timm:{name}: timm cannot build it for {channels} channel(s) and {num_classes} "
                         f"classes ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]})") from None
    if not _takes(body, tuple(in_shape)):
        size = smallest_size(body, channels, (getattr(body, "pretrained_cfg", None) or {}).get("input_size"))
        hint = f"; it takes IMAGE_SIZE={size} (an image folder resized on preparation)" if size else ""
        raise UsageError(f"STUDENT=timm:{name} cannot take images of {channels}x{in_shape[1]}x{in_shape[2]}{hint}, "
                         f"or choose another architecture")
    mean, std = image_stats(in_shape, mean, std)
    return nn.Sequential(Normalize(mean, std), body)
