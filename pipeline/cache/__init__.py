"""The cache family: the HDF5 file of teacher logits, and everything that reads or combines one.

`format` (the layout, the writer, digests and structure checks: the one module that knows names inside
the file), `reader` (LogitCache: checked once, then soft targets at any temperature), `checks` (what a
reader refuses), `rows` (which input each cache row is), `ensemble` (members combined, publishing),
`soft_targets` (a torch Dataset of image, soft target and label for your own loop).

May import: the foundations and pipeline.data. Never a teacher: a student's cache is read without one.
"""

import importlib
import warnings

# Imports that worked when the reader was the module pipeline/cache.py: kept for one release.
_MOVED = {"LogitCache": "reader", "CacheExpectations": "reader"}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module 'pipeline.cache' has no attribute {name!r}")
    warnings.warn(f"'from pipeline.cache import {name}' is deprecated and goes in the next release; use "
                  f"'from pipeline.cache.{_MOVED[name]} import {name}'", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f"pipeline.cache.{_MOVED[name]}"), name)
