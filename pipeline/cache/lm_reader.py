"""Reading a per-token cache (:mod:`pipeline.cache.lm_format`): checked once when opened, then the
teacher's targets for any windows at any grid temperature.

Opening reads every block once: ``complete`` must be exactly true, the structure must be the format's
(no links or storage outside the file, the declared shapes), every value finite, every id below the
vocabulary, and the sha256 of every dataset and of the attributes must match the digests written with
them. An edit made with h5py (reversed columns, a scaled row, shuffled windows, swapped ids, another
teacher's values) is refused in one line saying what to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.cache.format import file_attrs
from pipeline.cache.lm_format import TOKEN_FORMAT_VERSION, TOKEN_SPLITS, TokenDigest, target_log_probs
from pipeline.data.tokenizers import token_dtype
from pipeline.errors import UsageError
from pipeline.settings import GRID_MAX, T_RANGE

__all__ = ["TokenCache"]

_VALUE_NAMES = {"full": ("logits",), "topk": ("topk_logits", "topk_ids", "tail_odds")}
_BLOCK_BYTES = 64 << 20          # the most one checked block may take in memory


class TokenCache:
    """A verified per-token cache. ``targets(split, windows, T)`` gives (ids, log-probs, log tail mass);
    ``expect`` maps attributes to the values they must have (e.g. the text's fingerprint)."""

    def __init__(self, path: Path, expect: dict | None = None, *, block_windows: int = 256, in_memory: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"token cache {self.path} is missing", fix="token-logits")
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = file_attrs(f)
                self._check(self._attrs_problem())
                self._check(self._structure_problem(f))
                digest, held = TokenDigest(), {split: {name: [] for name in self.names} for split in TOKEN_SPLITS}
                # blocks bounded in bytes, whatever the declared shape: a reader never allocates more than this
                per_window = sum(f["train"][name].dtype.itemsize * int(np.prod(f["train"][name].shape[1:]))
                                 for name in self.names)
                block_windows = max(1, min(block_windows, _BLOCK_BYTES // max(per_window, 1)))
                for split in TOKEN_SPLITS:
                    n = self.windows(split)
                    for name in self.names if in_memory else ():      # typed, even for a split with no window
                        held[split][name].append(f[split][name][:0])
                    for lo in range(0, n, block_windows):
                        block = {name: f[split][name][lo: lo + block_windows] for name in self.names}
                        self._check(self._block_problem(split, lo, block))
                        digest.update(split, block)
                        for name in self.names if in_memory else ():
                            held[split][name].append(block[name])
                self._check(digest.problem(self.attrs))
                # What a student run records of its targets: the values' digests, read back here.
                self.fingerprint = hashlib.sha256(json.dumps(digest.digests(), sort_keys=True).encode()).hexdigest()[:16]
        except UsageError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"token cache {self.path} is unreadable or corrupt ({str(exc).splitlines()[0]})",
                             fix="token-logits") from None
        for key, want in (expect or {}).items():
            if want is not None and self.attrs.get(key) != want:
                raise UsageError(f"token cache {self.path} was made for another {key} ({self.attrs.get(key)}, "
                                 f"expected {want})", fix="token-logits")
        self._handle, self._pid = None, None
        # in_memory: the checked values, kept as read (a student then reads no file while it trains)
        self._memory = {split: {name: np.concatenate(parts) for name, parts in names.items()}
                        for split, names in held.items()} if in_memory else None

    # --- what it holds --------------------------------------------------------------------------------
    @property
    def temperatures(self) -> tuple[float, ...]:
        return tuple(float(t) for t in np.atleast_1d(self.attrs["temperatures"]))

    @property
    def names(self) -> tuple[str, ...]:
        return _VALUE_NAMES[self.attrs["storage"]]

    def windows(self, split: str) -> int:
        return int(self.attrs[f"{split}_windows"])

    def targets(self, split: str, windows, T: float, topk: int = 0) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The teacher's targets for ``windows`` (indices, in any order) at temperature ``T``: see
        :func:`pipeline.cache.lm_format.target_log_probs`. With ``topk`` below what the cache holds, the
        first ``topk`` of its support and a tail that also holds the rest, exactly (what a cache written at
        that k would hold, up to the storage's rounding): one cache serves every smaller k."""
        rows, inverse = np.unique(np.asarray(windows, dtype=np.int64), return_inverse=True)   # h5py: sorted, once
        if self._memory is not None:
            block = {name: self._memory[split][name][rows] for name in self.names}
        else:
            if self._handle is None or self._pid != os.getpid():     # each DataLoader worker opens its own
                self._handle, self._pid = h5py.File(self.path, "r"), os.getpid()
            block = {name: self._handle[split][name][rows] for name in self.names}
        ids, log_p, log_tail = target_log_probs({k: v[inverse] for k, v in block.items()}, T, self.temperatures)
        if not topk or topk >= log_p.shape[-1]:
            return ids, log_p, log_tail
        if ids is None:                                   # dense: the support is the k most likely
            log_p, ids = log_p.topk(log_p.shape[-1], dim=-1)
        rest = torch.logsumexp(log_p[..., topk:], dim=-1)
        return ids[..., :topk], log_p[..., :topk], torch.logaddexp(log_tail, rest)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state

    # --- checks ----------------------------------------------------------------------------------------
    def _check(self, problem: str | None) -> None:
        if problem:
            raise UsageError(f"token cache {self.path}: {problem}", fix="token-logits")

    def _attrs_problem(self) -> str | None:
        a = self.attrs
        if a.get("complete") is not True:
            return "not marked complete (the teacher pass did not finish)"
        if a.get("format_version") != TOKEN_FORMAT_VERSION or a.get("kind") != "tokens":
            return f"is no per-token cache (format_version {a.get('format_version')!r}, kind {a.get('kind')!r})"
        v, k, context = a.get("vocab_size"), a.get("topk"), a.get("context")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (v, k, context)) \
                or not (1 <= v <= 1 << 32 and 0 <= k < v and 1 <= context <= 1 << 20):
            return f"vocab_size {v!r}, topk {k!r} or context {context!r} is out of range"
        if a.get("storage") != ("topk" if k else "full") or a.get("dtype") not in ("float16", "float32"):
            return f"storage attributes are broken (storage {a.get('storage')!r}, dtype {a.get('dtype')!r})"
        try:
            grid = np.atleast_1d(np.asarray(a.get("temperatures"), dtype=np.float64))
        except (TypeError, ValueError):
            grid = np.empty(0)
        if (grid.ndim != 1 or not 1 <= len(grid) <= GRID_MAX or not np.all(np.isfinite(grid))
                or np.any(grid < T_RANGE[0]) or np.any(grid > T_RANGE[1]) or len(np.unique(grid)) != len(grid)):
            return (f"temperatures attribute {str(a.get('temperatures'))[:60]} is not a grid of 1 to {GRID_MAX} "
                    f"different temperatures in [{T_RANGE[0]:g}, {T_RANGE[1]:g}]")
        if a.get("stride") != context:
            return f"stride {a.get('stride')!r} disagrees with the context {context} the windows are read at"
        return None

    def _structure_problem(self, f: h5py.File) -> str | None:
        a = self.attrs
        grid, v, k, context = len(self.temperatures), a["vocab_size"], a["topk"], a["context"]
        for split in TOKEN_SPLITS:
            link = f.get(split, getlink=True)
            if not isinstance(link, h5py.HardLink) or not isinstance(f[split], h5py.Group):
                return f"/{split} is missing, not a group, or a link out of the file"
            n = a.get(f"{split}_windows")
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 1 << 40:
                return f"{split}_windows attribute {n!r} is not a count of windows"
            values = np.dtype(a["dtype"])
            want = {"logits": ((n, context, v), values)} if not k else {
                "topk_logits": ((n, context, k), values), "topk_ids": ((n, context, k), token_dtype(v)),
                "tail_odds": ((n, context, grid), np.dtype(np.float32))}
            for name, (shape, dtype) in want.items():
                ds = f[split].get(name, getlink=True)
                if not isinstance(ds, h5py.HardLink) or not isinstance(f[split][name], h5py.Dataset):
                    return f"/{split}/{name} is missing or points outside the file"
                ds = f[split][name]
                if ds.is_virtual or ds.external or ds.shape != shape:
                    return f"/{split}/{name} has shape {ds.shape} (or outside storage), not {shape}"
                if ds.dtype != dtype:       # ids stay unsigned integers of the vocabulary's width (never floats)
                    return f"/{split}/{name} is stored as {ds.dtype}, not {dtype}"
                # The pass writes every value, uncompressed: a file that holds less than it declares (a 10 KB
                # file declaring 10^8 windows) is refused before a block is read, not read as zeros for hours.
                declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if ds.id.get_storage_size() < declared:
                    return (f"/{split}/{name} declares {shape} values, {declared:,} bytes, but the file holds "
                            f"{ds.id.get_storage_size():,} bytes of it")
        return None

    def _block_problem(self, split: str, lo: int, block: dict) -> str | None:
        for name in ("logits", "topk_logits", "tail_odds"):
            if name in block and not np.isfinite(block[name]).all():
                return f"{split} windows from {lo} hold NaN or Inf in {name}"
        if "topk_ids" in block and block["topk_ids"].size:
            ids = block["topk_ids"]
            if int(ids.max()) >= self.attrs["vocab_size"]:
                return f"{split} windows from {lo} hold token ids outside the vocabulary"
            if ids.shape[-1] > 1 and np.any(np.diff(np.sort(ids, axis=-1), axis=-1) == 0):
                return f"{split} windows from {lo} name one token twice in a position's top-k"
        if "topk_logits" in block and block["topk_logits"].size and np.any(np.diff(block["topk_logits"], axis=-1) > 0):
            return f"{split} windows from {lo} hold top-k logits out of order (they are stored descending)"
        return None
