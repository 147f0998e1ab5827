"""A model the user writes: ``package.module:factory``, for a teacher or a student.

This is code the user named, so softcache imports and runs it, and nothing else does: anything it does on
the way (an exception, a syntax error, ``sys.exit``) becomes one line naming the setting. A student's factory
is called with keywords only (``in_shape=(C, H, W), num_classes=N`` for images; ``vocab_size=V, context=L``
for language models); a teacher's with none. A run records the module's source digest, so a finished
student is rebuilt (for export, ``generate``) only by the code that trained it.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from typing import Callable

from torch import nn

from pipeline.errors import UsageError

__all__ = ["is_module_spec", "import_factory", "call_factory", "module_digest", "first_line"]

_SPEC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def is_module_spec(spec: str) -> bool:
    """``package.module:factory`` (dotted Python names on both sides), and not a source prefix (timm:, hf:)."""
    return bool(_SPEC.fullmatch(spec)) and not spec.startswith(("timm:", "hf:"))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def import_factory(spec: str, setting: str) -> Callable:
    """The callable ``spec`` names, imported; a failure is one line saying what to fix."""
    module_name, _, factory_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, factory_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{setting}={spec}: cannot import '{factory_name}' from module '{module_name}' "
                         f"({type(exc).__name__}: {exc}); check the name and that the module is on PYTHONPATH") from None
    except (Exception, SystemExit) as exc:    # the user's module ran, and failed or exited, on import
        raise UsageError(f"{setting}={spec}: importing module '{module_name}' raised {first_line(exc)}; softcache "
                         f"imports and runs a module:factory model's module, so fix the module") from None
    if not callable(factory):
        raise UsageError(f"{setting}={spec}: '{factory_name}' is a {type(factory).__name__}, not a function that "
                         f"builds a model")
    return factory


def call_factory(spec: str, setting: str, **kwargs) -> nn.Module:
    """Import the factory, call it with ``kwargs``, and insist on a torch module."""
    factory = import_factory(spec, setting)
    factory_name = spec.partition(":")[2]
    given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        model = factory(**kwargs)
    except TypeError as exc:        # most often: the factory takes other arguments
        raise UsageError(f"{setting}={spec}: calling {factory_name}({given}) failed ({exc}); the factory must "
                         f"take {', '.join(kwargs) or 'no arguments'}" + (" as keywords" if kwargs else "")) from None
    except (Exception, SystemExit) as exc:
        raise UsageError(f"{setting}={spec}: {factory_name}({given}) raised {first_line(exc)}; it must build and "
                         f"return the model") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{setting}={spec}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def module_digest(spec: str) -> str:
    """A digest of the source file of the module ``spec`` names (imported already): what a checkpoint records
    so that rebuilding the model from edited code is refused rather than loading weights into another net."""
    module = importlib.import_module(spec.partition(":")[0])
    path = getattr(module, "__file__", None)
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:16] if path else ""
