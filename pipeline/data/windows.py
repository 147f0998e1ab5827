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
import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.data.text import SPLITS, Corpus
from pipeline.data.tokenizers import Tokenizer, token_dtype
from pipeline.digests import ATTRS_DIGEST, attrs_digest, plain
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
        f.attrs["digests"] = json.dumps(_digests(f), sort_keys=True)
    return attrs


_DATASETS = ("tokens", "doc_starts")


def _digests(f: h5py.File) -> dict[str, str]:
    """sha256 of every dataset the file holds (each split's tokens and document starts, the tokenizer) and of
    its attributes, as caches carry: an h5py edit of a token, a document start, the tokenizer or an attribute
    is seen by every reader, not trained on."""
    out = {}
    for split in SPLITS:
        for name in _DATASETS:
            ds, sha = f[split][name], hashlib.sha256()
            for lo in range(0, len(ds), _CHUNK):
                sha.update(np.ascontiguousarray(ds[lo: lo + _CHUNK]).tobytes())
            out[f"{split}/{name}"] = sha.hexdigest()
    if "tokenizer_json" in f:
        definition = f["tokenizer_json"].asstr()[()]
        out["tokenizer_json"] = hashlib.sha256(definition.encode("utf-8", "surrogatepass")).hexdigest()
    out[ATTRS_DIGEST] = attrs_digest({k: plain(v) for k, v in f.attrs.items() if k != "digests"})
    return out


def text_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer a prepared text file was made with, rebuilt from what the file records."""
    attrs = read_text_attrs(path)
    with h5py.File(path, "r") as f:
        definition = f["tokenizer_json"].asstr()[()] if "tokenizer_json" in f else ""
    return Tokenizer(str(attrs["tokenizer"]), int(attrs["vocab_size"]), int(attrs["separator"]),
                     str(attrs["tokenizer_fingerprint"]), definition)


def read_text_attrs(path: Path) -> dict:
    """A prepared text file's attributes, once its contents proved to be what was written (:func:`_digests`,
    checked once per process for each state of the file); a file that is none is refused in one line."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise UsageError(f"{path} is not a prepared text file ({exc.strerror})", fix="text-data") from None
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _CHECKED:
        _CHECKED[key] = _checked_attrs(path)
    return dict(_CHECKED[key])


_CHECKED: dict[tuple, dict] = {}


def _checked_attrs(path: Path) -> dict:
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: plain(v) for k, v in f.attrs.items()}
            if attrs.get("format") != PREPARED_TEXT:
                raise UsageError(f"{path} is not a prepared text file (format {attrs.get('format')!r})",
                                 fix="text-data")
            problem = _structure_problem(f, attrs)
            if problem is None:
                try:
                    recorded = json.loads(attrs.pop("digests"))
                except (KeyError, TypeError, ValueError):
                    recorded = None
                if not isinstance(recorded, dict):
                    problem = "holds no digests of its tokens (made by an older softcache, or edited)"
                else:
                    found = _digests(f)
                    changed = sorted(k for k in found.keys() | recorded.keys() if found.get(k) != recorded.get(k))
                    if changed:
                        problem = f"{', '.join(changed)} differ from the digests written with them: it was edited"
    except UsageError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a prepared text file ({str(exc).splitlines()[0][:120]})",
                         fix="text-data") from None
    if problem:
        raise UsageError(f"prepared text {path} {problem}; rebuild it", fix="text-data")
    return attrs


def _structure_problem(f: h5py.File, attrs: dict) -> str | None:
    """What must hold before a byte of tokens is read: plain datasets inside the file, of the declared
    lengths, ids in an unsigned type of the vocabulary's width."""
    vocab = attrs.get("vocab_size")
    if not isinstance(vocab, int) or not 2 <= vocab <= 1 << 32:
        return f"declares a vocabulary of {vocab!r} tokens"
    for split in SPLITS:
        if not isinstance(f.get(split, getlink=True), h5py.HardLink) or not isinstance(f[split], h5py.Group):
            return f"has no /{split} group of its own"
        for name in _DATASETS:
            if (not isinstance(f[split].get(name, getlink=True), h5py.HardLink)
                    or not isinstance(f[split][name], h5py.Dataset)):
                return f"has no /{split}/{name} dataset of its own"
            ds = f[split][name]
            if ds.is_virtual or ds.external or ds.ndim != 1:
                return f"/{split}/{name} reads another file or is not one-dimensional"
        tokens = f[split]["tokens"]
        if tokens.dtype != token_dtype(vocab) or len(tokens) != attrs.get(f"{split}_tokens"):
            return f"/{split}/tokens ({tokens.dtype}, {len(tokens)}) disagrees with its attributes"
        if tokens.id.get_storage_size() < tokens.nbytes:
            return f"/{split}/tokens declares {tokens.nbytes:,} bytes and holds {tokens.id.get_storage_size():,}"
        if any(int(tokens[lo: lo + _CHUNK].max()) >= vocab for lo in range(0, len(tokens), _CHUNK)):
            return f"/{split}/tokens holds ids past its vocabulary of {vocab}"
    if not isinstance(attrs.get("separator"), int) or not 0 <= attrs["separator"] < vocab:
        return f"declares a separator {attrs.get('separator')!r} outside its vocabulary"
    return None


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

    def require(self) -> "TokenWindows":
        """These windows, refused in one line where there is none: a split too short for one window of
        CONTEXT + 1 tokens cannot be scored, and a score of 0.000 bits per byte would read as perfect."""
        if not self.windows:
            n = int(self.attrs[f"{self.split}_tokens"])
            raise UsageError(f"the {self.split} split of {self.path} holds {n} tokens, not one full window of "
                             f"CONTEXT + 1 = {self.context + 1}: nothing there can be measured; give more text "
                             f"(more documents, or a larger LIMIT) or a shorter CONTEXT")
        return self

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
