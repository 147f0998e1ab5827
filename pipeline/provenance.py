"""Which softcache made an artifact: the package version and a digest of its sources.

Every teacher record, cache, student run and export records :func:`code_version`. The report,
``softcache verify`` and ``softcache inspect`` compare it with the code running now and say when
an artifact was made by other code.

A code change rebuilds nothing by itself. That is a choice: DVC declares code as a dependency of
each stage, so any edit to it reruns the stage; here the stages share one package, and a comment
edited in ``pipeline/`` would retrain every teacher. Instead the change is shown, and the user
removes what should be rebuilt (``make clean-students``, or one cache).

The digest covers every ``.py`` file of the ``pipeline`` and ``stages`` packages, in path order:
a per-artifact subset would be finer, but would silently miss a shared helper.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

__all__ = ["code_version", "other_code"]

_ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = ("pipeline", "stages")


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """{'softcache_version': '0.1.0', 'source_digest': 12 hex digits}; the same for the whole process."""
    h = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted((_ROOT / package).glob("*.py")):
            h.update(f"{package}/{path.name}\0".encode() + path.read_bytes() + b"\0")
    try:
        version = metadata.version("softcache")
    except metadata.PackageNotFoundError:     # run from a checkout that was never installed
        version = "unknown"
    return {"softcache_version": version, "source_digest": h.hexdigest()[:12]}


def other_code(recorded: dict) -> str | None:
    """'softcache 0.1.0, sources 1a2b3c4d5e6f' when ``recorded`` (an artifact's attributes or
    metrics) was made by other code than this; 'an older softcache' when it records none; None
    when it was made by this code."""
    digest = recorded.get("source_digest")
    if digest is None:
        return "an older softcache (no code version recorded)"
    if digest == code_version()["source_digest"]:
        return None
    return f"softcache {recorded.get('softcache_version', '?')}, sources {digest}"
