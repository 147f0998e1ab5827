"""What a teacher pass needs to be killed and resumed, and to run as several processes: its finished
chunks kept on disk under a key (:class:`Parts`), and this process's place in a ``torchrun`` launch
(:class:`World`). The image pass and the per-token pass share both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pipeline.errors import UsageError
from pipeline.files import atomic_path, disk_full_is_one_line, refuse_link, working_dir, write_json

__all__ = ["parts_dir", "Parts", "World"]


def parts_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.parts"


Part = np.ndarray | dict[str, np.ndarray]


class Parts:
    """Finished chunks of a pass, one ``<split>-<chunk>.npy`` each (an array), or ``.npz`` (named arrays),
    kept under a key: parts made for another teacher, dataset or chunking are cleared, never mixed in.

    A part is sealed into the cache only once it proves itself: the sha256 of its file, written beside it
    (``.sha256``) after the part itself, must match, it must load (as plain arrays: no pickles), and ``check``
    (the pass's own test of a part's values: shapes, finiteness) must pass. A part that fails is removed and
    computed again by :meth:`ready`, never sealed: a part cut short, edited or holding a NaN costs a chunk of
    the pass, not a cache of wrong targets with matching digests."""

    def __init__(self, directory: Path, key: dict, suffix: str = ".npy",
                 check: Callable[[str, int, Part], str | None] = lambda split, chunk, value: None):
        self.dir, self.suffix, self.check = refuse_link(directory), suffix, check
        key_file = refuse_link(directory / "key.json")
        if directory.exists() and (not key_file.is_file() or _read_key(key_file) != key):
            shutil.rmtree(directory)        # left by another teacher, dataset or chunking, or unreadable
        working_dir(directory)
        write_json(key_file, key)

    def path(self, split: str, chunk: int) -> Path:
        return self.dir / f"{split}-{chunk:06d}{self.suffix}"

    def _seal(self, split: str, chunk: int) -> Path:
        return self.dir / f"{split}-{chunk:06d}.sha256"

    def save(self, split: str, chunk: int, value: Part) -> None:
        nbytes = value.nbytes if isinstance(value, np.ndarray) else sum(v.nbytes for v in value.values())
        path = self.path(split, chunk)
        self._seal(split, chunk).unlink(missing_ok=True)
        with disk_full_is_one_line(path, nbytes):
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, value) if self.suffix == ".npy" else np.savez(fh, **value)
            with atomic_path(self._seal(split, chunk)) as tmp:    # after the part: a part without it is redone
                tmp.write_text(_sha256(path))

    def ready(self, split: str, chunk: int) -> bool:
        """Whether the chunk has a part that proves itself (class docstring); a damaged one is removed."""
        if self._proved(split, chunk)[0] is None:
            return True
        self.path(split, chunk).unlink(missing_ok=True)
        self._seal(split, chunk).unlink(missing_ok=True)
        return False

    def load(self, split: str, chunk: int) -> Part:
        """A part that proves itself, read once; one that does not is removed and refused in one line (run
        the same command again: it computes that chunk anew)."""
        problem, value = self._proved(split, chunk)
        if problem is not None:
            self.path(split, chunk).unlink(missing_ok=True)
            self._seal(split, chunk).unlink(missing_ok=True)
            raise UsageError(f"{self.path(split, chunk)}: {problem}; it was removed, and running the same command "
                             f"again computes that chunk anew")
        return value

    def _proved(self, split: str, chunk: int) -> tuple[str | None, Part | None]:
        """(what is wrong with the part or None, its value when it could be read)."""
        path, seal = self.path(split, chunk), self._seal(split, chunk)
        if not path.is_file() or path.is_symlink():
            return "the part is missing", None
        try:
            if not seal.is_file() or seal.read_text().strip() != _sha256(path):
                return "the part differs from the digest written with it (cut short or edited)", None
            value = self._read(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            return f"the part is unreadable ({type(exc).__name__})", None
        return self.check(split, chunk, value), value

    def _read(self, path: Path) -> Part:
        if self.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as parts:
            return {name: parts[name] for name in parts.files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_key(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class World:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 without one).

    torch.distributed is used only to wait for each other (gloo on CPUs, NCCL on GPUs);
    the shards travel through the parts directory, which every rank can see.
    """

    def __init__(self, rank: int, size: int, device: str):
        self.rank, self.size, self.device = rank, size, device

    @classmethod
    def from_environment(cls, device: str) -> "World":
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        if size > 1 and device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        return cls(rank, size, device)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        if self.size == 1:
            yield
            return
        import torch.distributed as dist

        dist.init_process_group("nccl" if self.device.startswith("cuda") else "gloo")
        try:
            yield
        finally:
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def my_slice(self, chunks: list) -> list:
        """This rank's contiguous run of chunks (the first ranks take one more when it does not divide)."""
        per, extra = divmod(len(chunks), self.size)
        lo = self.rank * per + min(self.rank, extra)
        return chunks[lo: lo + per + (1 if self.rank < extra else 0)]
