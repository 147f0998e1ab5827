"""What an HDF5 file softcache writes says about itself, made checkable: its attributes as plain values and
one sha256 over all of them. Caches (image and per-token) and prepared text files carry this digest beside
the digests of their datasets, so an h5py edit of an attribute is seen by every reader. A foundation: the
data family and the cache family both use it, neither owns it.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

__all__ = ["ATTRS_DIGEST", "attrs_digest", "plain", "definition_fingerprint"]

ATTRS_DIGEST = "attrs"         # the key, in ``digests``, of every attribute's digest
_UNDIGESTED_ATTRS = ("digests", "complete")


def plain(v):
    """h5py attribute values as plain Python values (numpy scalars and bytes unwrapped)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _canonical(value):
    value = plain(value)
    if isinstance(value, np.ndarray):
        return [_canonical(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def attrs_digest(attrs: dict) -> str:
    """sha256 of every attribute but ``digests`` and ``complete``: temperature, classes, top-k, views,
    members, transfer rows and everything else that changes what a student learns, or what a report
    says about the file (an h5py edit of ``temperature`` from 1 to 50 is otherwise invisible)."""
    body = {k: _canonical(v) for k, v in attrs.items() if k not in _UNDIGESTED_ATTRS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=repr).encode()).hexdigest()


def definition_fingerprint(definition: str) -> str:
    """A tokenizer.json's identity: what every text prepared with it, and a teacher or student folder that
    ships it, record."""
    return hashlib.sha256(definition.encode("utf-8", errors="surrogateescape")).hexdigest()[:16]
