"""The files a user's folder (a text corpus, an image folder, a transfer set) holds, read under one rule.

A folder is often shared, and whatever softcache reads from it ends up in a teacher, a cache and the
text a student generates. So a folder is read as the files that lie inside it: a link is followed only
where it ends at a regular file inside the same folder, and a link that leaves the folder (to another
user's file, to ``/proc/self/environ``) is refused by name, never read. A link to a directory is not
descended into (its files are read where they lie, once) unless it leaves the folder, which is refused
the same way. Devices, pipes and sockets are not files and are left out. A file name that is not UTF-8
cannot be recorded (in a prepared file, its fingerprint, the reports), so it is refused by its bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pipeline.errors import UsageError

__all__ = ["files_under", "utf8_names"]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def utf8_names(root: Path, paths: list[str]) -> list[str]:
    """Relative paths that are text, or a one-line refusal naming the first that is not, by its bytes."""
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{root}: the file name {os.fsencode(path)!r} is not UTF-8 text, which softcache "
                             f"records; rename it (e.g. with convmv) or move it out of the folder") from None
    return paths


def files_under(root: Path, keep: Callable[[str], bool] = lambda name: True, start: Path | None = None,
                skip_dirs: frozenset[str] = frozenset(), links_out: str = "refuse") -> list[str]:
    """Every regular file under ``start`` (default: ``root``) whose name ``keep`` accepts, as sorted paths
    relative to ``root``. Hidden files and folders and ``skip_dirs`` are left out; a link out of ``root``
    is refused (module docstring), or with ``links_out="skip"`` left out: for the interpreter's own standard
    library, where a distribution may link a file to /etc and no user shares the folder."""
    root, start = Path(root), Path(start or root)
    real_root = os.path.realpath(root)
    if not _inside(os.path.realpath(start), real_root):
        raise UsageError(f"{start} is a link out of {root}; softcache reads only what lies inside the folder: "
                         f"copy the files in, or give the folder the link points to")
    found = []
    for directory, dirs, files in os.walk(start, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in skip_dirs)
        files = [f for f in files if not f.startswith(".")]
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), real_root):
                if links_out == "skip":
                    continue
                raise UsageError(f"{root}: {os.path.relpath(path, root)!r} is a link out of the folder (to "
                                 f"{os.readlink(path)!r}); softcache reads only what lies inside it: copy the file "
                                 f"in or remove the link")
        for name in files:
            path = os.path.join(directory, name)
            # a link inside the folder is read as its target; a pipe or device is no document
            if (not name.startswith(".") and keep(name) and os.path.isfile(path)
                    and _inside(os.path.realpath(path), real_root)):
                found.append(Path(path).relative_to(root).as_posix())
    return utf8_names(root, sorted(found))
