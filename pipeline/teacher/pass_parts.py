"""What a teacher pass needs to be killed and resumed, and to run as several processes: its finished
chunks kept on disk under a key (:class:`Parts`), and this process's place in a ``torchrun`` launch
(:class:`World`). The image pass and the per-token pass share both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.files import atomic_path, disk_full_is_one_line, refuse_link, working_dir, write_json

__all__ = ["parts_dir", "Parts", "World"]


def parts_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.parts"


class Parts:
    """Finished chunks of a pass, one ``<split>-<chunk>.npy`` each (an array), or ``.npz`` (named arrays),
    kept under a key: parts made for another teacher, dataset or chunking are cleared, never mixed in."""

    def __init__(self, directory: Path, key: dict, suffix: str = ".npy"):
        self.dir, self.suffix = refuse_link(directory), suffix
        key_file = refuse_link(directory / "key.json")
        if directory.exists() and (not key_file.is_file() or json.loads(key_file.read_text()) != key):
            shutil.rmtree(directory)        # left by another teacher, dataset or chunking
        working_dir(directory)
        write_json(key_file, key)

    def path(self, split: str, chunk: int) -> Path:
        return self.dir / f"{split}-{chunk:06d}{self.suffix}"

    def save(self, split: str, chunk: int, value: np.ndarray | dict[str, np.ndarray]) -> None:
        nbytes = value.nbytes if isinstance(value, np.ndarray) else sum(v.nbytes for v in value.values())
        with disk_full_is_one_line(self.path(split, chunk), nbytes), atomic_path(self.path(split, chunk)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, value) if self.suffix == ".npy" else np.savez(fh, **value)

    def load(self, split: str, chunk: int) -> np.ndarray | dict[str, np.ndarray] | None:
        path = self.path(split, chunk)
        if not path.is_file():
            return None
        if self.suffix == ".npy":
            return np.load(path)
        with np.load(path) as parts:
            return {name: parts[name] for name in parts.files}


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
