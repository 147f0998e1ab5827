"""Token windows: a text corpus prepared once into one token array per split (HDF5, on disk), read a
window at a time, as the image store reads a batch of images.

Each split's stream is its documents in name order, each followed by the tokenizer's separator. Window
``i`` of a split is ``tokens[i * stride : i * stride + context + 1]``: the model reads its first
``context`` tokens and is scored on its last ``context`` (each position predicts the next token). The
stride defaults to ``context``, so every token of the stream is predicted once; the last partial
window is dropped. Windows run across documents: the separator marks the boundary, and the token after
it is the next document's first, predicted from the separator (GPT-2's end-of-text convention). A
causal teacher's target at position j depends only on the window's tokens up to j, and a student
trains on exactly the windows its cache was written for.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.data.text import SPLITS, Corpus
from pipeline.data.tokenizers import Tokenizer, token_dtype
from pipeline.errors import UsageError
from pipeline.files import atomic_path, disk_full_is_one_line, need_space, reserved_hdf5

__all__ = ["PREPARED_TEXT", "prepare_text", "read_text_attrs", "text_tokenizer", "TokenWindows"]

PREPARED_TEXT = "softcache-text-1"        # the prepared file's format attribute
_CHUNK = 1 << 20                          # tokens per HDF5 chunk


def prepare_text(corpus: Corpus, tokenizer: Tokenizer, out: Path) -> dict:
    """Tokenize every split of ``corpus`` into ``out`` (written atomically); return its attributes."""
    dtype = token_dtype(tokenizer.vocab_size)
    # at most one token per byte, plus a separator per document
    docs = sum(len(corpus.documents[s]) for s in SPLITS)     # tokens, document starts, the tokenizer, slack
    need = (sum(corpus.bytes_in(s) for s in SPLITS) + docs) * dtype.itemsize + 8 * docs \
        + 2 * len(tokenizer.definition.encode()) + (1 << 20)
    need_space(out, need)
    digest = hashlib.sha256()
    counts = {}
    with disk_full_is_one_line(out, need), atomic_path(out) as tmp, reserved_hdf5(tmp, need) as f:
        for split in SPLITS:
            parts, starts, at = [], [], 0
            for name in corpus.documents[split]:
                ids = tokenizer.encode(corpus.read(name))
                starts.append(at)
                parts += [ids.astype(dtype, copy=False), np.array([tokenizer.separator], dtype)]
                at += len(ids) + 1
            tokens = np.concatenate(parts) if parts else np.empty(0, dtype)
            g = f.create_group(split)
            g.create_dataset("tokens", data=tokens, chunks=(min(_CHUNK, max(1, len(tokens))),), fletcher32=True,
                             maxshape=(None,))
            g.create_dataset("doc_starts", data=np.asarray(starts, np.int64), fletcher32=True)
            digest.update(split.encode() + tokens.tobytes())
            counts[split] = len(tokens)
        if tokenizer.definition:
            f.create_dataset("tokenizer_json", data=tokenizer.definition, dtype=h5py.string_dtype())
        attrs = {"format": PREPARED_TEXT, "corpus": corpus.name, "corpus_fingerprint": corpus.fingerprint,
                 "python": corpus.python, "split_seed": corpus.split_seed, "tokenizer": tokenizer.name,
                 "tokenizer_fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size,
                 "separator": tokenizer.separator, "fingerprint": digest.hexdigest()[:16],
                 **{f"{s}_tokens": n for s, n in counts.items()}}
        f.attrs.update(attrs)
    return attrs


def text_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer a prepared text file was made with, rebuilt from what the file records."""
    attrs = read_text_attrs(path)
    with h5py.File(path, "r") as f:
        definition = f["tokenizer_json"].asstr()[()] if "tokenizer_json" in f else ""
    return Tokenizer(str(attrs["tokenizer"]), int(attrs["vocab_size"]), int(attrs["separator"]),
                     str(attrs["tokenizer_fingerprint"]), definition)


def read_text_attrs(path: Path) -> dict:
    """A prepared text file's attributes; a file that is none is refused in one line."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except (OSError, KeyError) as exc:
        raise UsageError(f"{path} is not a prepared text file ({exc})", fix="text-data") from None
    if attrs.get("format") != PREPARED_TEXT:
        raise UsageError(f"{path} is not a prepared text file (format {attrs.get('format')!r})", fix="text-data")
    return attrs


class TokenWindows:
    """The windows of one split of a prepared text file (see the module's docstring): ``len()``, and
    ``batch(indices)`` as int64 (B, context + 1). The file is opened lazily by the process that reads, so
    the object can be handed to DataLoader workers."""

    def __init__(self, path: Path, split: str, context: int, stride: int | None = None):
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if context < 1 or (stride is not None and stride < 1):
            raise UsageError(f"CONTEXT and the stride must be at least 1, got {context} and {stride}")
        self.path, self.split, self.context, self.stride = Path(path), split, context, stride or context
        self.attrs = read_text_attrs(self.path)
        n = int(self.attrs[f"{split}_tokens"])
        self.windows = max(0, (n - 1 - context) // self.stride + 1) if n > context else 0
        self._handle: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.windows

    def _tokens(self) -> h5py.Dataset:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._handle[self.split]["tokens"]

    def batch(self, indices) -> torch.Tensor:
        """int64 (B, context + 1): the windows at ``indices``, each read as one contiguous slice."""
        tokens = self._tokens()
        out = np.empty((len(indices), self.context + 1), np.int64)
        for row, i in enumerate(indices):
            if not 0 <= i < self.windows:
                raise IndexError(f"window {i} of {self.windows}")
            out[row] = tokens[i * self.stride: i * self.stride + self.context + 1]
        return torch.from_numpy(out)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state
