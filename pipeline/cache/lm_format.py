"""The per-token cache: a causal teacher's next-token distribution at every position of every window of a
prepared text file, kept small and exact at every temperature it promises.

Layout (HDF5, ``format_version`` 3, ``kind`` "tokens"). For each split (``train``, ``val``, ``test``) of
N windows of L = ``context`` positions, window i being window i of :class:`pipeline.data.windows.
TokenWindows` at the recorded ``stride``:

- dense (``topk`` 0): ``/<split>/logits`` (N, L, V), the teacher's logits less their largest, in ``dtype``;
- top-k: ``/<split>/topk_logits`` (N, L, k), the k largest logits less the largest (so the first is 0),
  descending, in ``dtype``;
  ``/<split>/topk_ids`` (N, L, k), their token ids, in the smallest unsigned type that holds V − 1;
  ``/<split>/tail_odds`` (N, L, G) float32: for each temperature T of the grid ``temperatures``
  (G of them), log of the probability outside the top-k over the probability inside it,
  ``logsumexp(z_tail / T) − logsumexp(z_topk / T)``, computed at write time from every logit.

Reading at a grid temperature T: the support's probabilities are ``softmax(z_topk / T)`` scaled by the
support's share ``sigmoid(−odds)``, and the tail holds ``sigmoid(odds)``, both taken in log space
(``−softplus(±odds)``). That is the dense teacher's softmax(z / T) on the support and its exact tail mass,
within the storage dtype's rounding: neither rebuilt as 1 − Σp (rounding noise once the support holds
more than 0.9999 of the mass) nor spread evenly over the other classes (which at k = 16, T = 2 puts 24.5%
in the tail where the truth is 12.8%). A temperature off the grid is refused, naming the grid: the tail
at another T depends on logits that were not kept. A dense cache reads at any T.

Attributes: ``vocab_size``, ``context``, ``stride``, ``topk``, ``dtype``, ``temperatures``, the teacher's
and the text's provenance (``teacher_fingerprint``, ``text_fingerprint``, ``tokenizer_fingerprint``, ...),
the code version, ``digests`` (sha256 of every dataset in row order and of every attribute) and
``complete``, written ``True`` last.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.tokenizers import token_dtype
from pipeline.digests import ATTRS_DIGEST, attrs_digest, plain
from pipeline.errors import UsageError
from pipeline.files import atomic_path, disk_full_is_one_line, need_space, reserved_hdf5
from pipeline.provenance import code_version

__all__ = ["TOKEN_FORMAT_VERSION", "TOKEN_SPLITS", "token_targets", "top_entries", "targets_are_finite",
           "target_log_probs", "write_token_cache", "token_bytes_per_position", "grid_index", "TokenDigest"]

TOKEN_FORMAT_VERSION = 3
TOKEN_SPLITS = ("train", "val", "test")
_WINDOWS_PER_CHUNK = 64


def targets_are_finite(block: dict[str, np.ndarray]) -> bool:
    """Whether a block from :func:`token_targets` holds only finite numbers, which checks every logit: a
    NaN or +inf anywhere in a row sorts first into its top-k and leaves the stored row non-finite (a
    dense block stores every logit, so it refuses a -inf too). In a top-k block a -inf outside the
    support is a zero probability, exact in the tail sum, and is kept. Checking the few stored numbers
    instead of the (B, L, V) logits matters at V = 32,768: ``torch.isfinite(logits).all()`` took half as
    long as the teacher's forward on a CPU thread, and even one min/max pass over the logits is 1% of it."""
    return all(np.isfinite(values).all() for name, values in block.items() if name != "topk_ids")


def top_entries(rows: torch.Tensor, k: int, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows.topk(k, dim=-1)`` for (R, V) rows with V much larger than k, found in two steps: the k blocks
    of ``width`` columns with the largest maxima hold k entries at least as large as any entry outside
    them (each of those blocks' maxima is), so the top k of those k × width candidates, with the columns
    past the last whole block, are the top k of the row; values equal torch.topk's (a NaN sorts first, as
    there), ids may differ among tied values. At V = 32,768, k = 17 on one CPU thread this takes a third of
    torch.topk's time, which was half of the targets' time."""
    count, vocab = rows.shape
    if vocab < 8 * k * width:
        return rows.topk(k, dim=-1)
    whole = vocab - vocab % width
    blocks = rows[:, :whole].reshape(count * (whole // width), width)  # a view when V is whole blocks
    chosen = blocks.view(count, -1, width).amax(-1).topk(k, dim=-1).indices          # (R, k) block numbers
    starts = chosen + torch.arange(count, device=rows.device)[:, None] * (whole // width)
    candidates = blocks.index_select(0, starts.reshape(-1)).view(count, k * width)   # 64 floats at a time
    if whole < vocab:
        candidates = torch.cat([candidates, rows[:, whole:]], dim=-1)   # and the columns past the last block
    values, where = candidates.topk(k, dim=-1)
    block_of = chosen.gather(-1, where.clamp(max=k * width - 1) // width)
    return values, torch.where(where < k * width, block_of * width + where % width, whole + where - k * width)


def token_targets(logits: torch.Tensor, topk: int, temperatures: tuple[float, ...],
                  rows: int = 32) -> dict[str, np.ndarray]:
    """What the cache stores for a block of teacher logits (B, L, V): the dense logits, or the top-k
    logits and ids with the tail's log-odds at each grid temperature (float32, from every logit).
    Computed where the logits are (a GPU's pass copies k + G numbers per position to the host, not V).

    Logits are shifted so each position's largest is 0 (softmax is blind to the shift): float16 then keeps
    its finest steps for the tokens that carry the mass. The tail's sums run ``rows`` positions at a time
    in one reused buffer (a few MB, so they stay in cache), relative to the tail's own largest logit (so
    a tail never underflows to nothing; the support's entries, which may overflow, are zeroed after the
    exp), and for a grid of halvings (4, 2, 1) from a single exp: exp(x/1) is exp(x/4) squared twice. The
    exp is taken as exp2 of x·log2(e): the same rounding (one float32 multiply-add before it), at a third
    of torch.exp's time on a CPU thread, where it was most of the targets' cost at V = 32,768."""
    z = logits.float()
    if not topk:
        return {"logits": (z - z.amax(dim=-1, keepdim=True)).cpu().numpy()}
    shape, vocab = z.shape[:-1], z.shape[-1]
    flat = z.reshape(-1, vocab)
    top, ids = top_entries(flat, min(topk + 1, vocab))                    # the support, and the tail's largest
    tail_max, support, ids = top[:, topk:topk + 1], top[:, :topk], ids[:, :topk]
    sums = flat.new_empty(len(flat), len(temperatures))                    # of exp((z - tail_max) / T) over the tail
    order = sorted(range(len(temperatures)), key=lambda g: -temperatures[g])      # largest T first
    buf = flat.new_empty(min(rows, len(flat)), vocab)
    for lo in range(0, len(flat), rows):
        block, b, hi = flat[lo:lo + rows], buf[:min(rows, len(flat) - lo)], lo + rows
        base = None
        for g in order:
            t = temperatures[g]
            steps = math.log2(base / t) if base else -1.0
            if steps >= 0 and steps == int(steps):                         # exp(x/t) = exp(x/base)^(2^steps)
                for _ in range(int(steps)):
                    b.mul_(b)
            else:                                                          # one pass: (x - max)/t·log2(e), then exp2
                torch.add(tail_max[lo:hi] * (-_LOG2E / t), block, alpha=_LOG2E / t, out=b)
                b.exp2_().scatter_(-1, ids[lo:hi], 0.0)                    # the tail alone (the support may be inf)
            base = t
            sums[lo:hi, g] = b.sum(-1)
    grid = torch.tensor(temperatures, dtype=torch.float32, device=flat.device)
    odds = tail_max / grid + sums.log() - torch.logsumexp(support[:, None, :] / grid[:, None], dim=-1)
    return {"topk_logits": (support - top[:, :1]).reshape(*shape, topk).cpu().numpy(),
            "topk_ids": ids.reshape(*shape, topk).cpu().numpy().astype(token_dtype(vocab)),
            "tail_odds": odds.reshape(*shape, len(temperatures)).cpu().numpy()}


_LOG2E = math.log2(math.e)


def grid_index(temperatures, T: float) -> int:
    """Where ``T`` lies in the cache's grid, or a one-line refusal naming the grid."""
    for g, t in enumerate(temperatures):
        if abs(float(t) - float(T)) <= 1e-9 * max(1.0, abs(float(T))):
            return g
    raise UsageError(f"T={T:g} is not in the cache's temperature grid ({', '.join(f'{t:g}' for t in temperatures)}): "
                     f"a top-k cache holds the exact tail at those temperatures only; use one of them, or rebuild "
                     f"the cache with CACHE_TS including {T:g}")


def target_log_probs(block: dict, T: float, temperatures) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(support ids (B, L, k) int64, log-probabilities on the support (B, L, k), log tail mass (B, L)) at
    temperature ``T``; for a dense block (None, log_softmax(z / T) (B, L, V), zeros)."""
    if "logits" in block:
        logp = F.log_softmax(torch.as_tensor(block["logits"]).float() / T, dim=-1)
        return None, logp, torch.full(logp.shape[:-1], float("-inf"))
    g = grid_index(temperatures, T)
    odds = torch.as_tensor(block["tail_odds"][..., g]).float()
    support = F.log_softmax(torch.as_tensor(block["topk_logits"]).float() / T, dim=-1) - F.softplus(odds)[..., None]
    return torch.as_tensor(block["topk_ids"].astype(np.int64)), support, -F.softplus(-odds)


def token_bytes_per_position(vocab_size: int, topk: int, dtype: str, grid: int) -> int:
    """Bytes one position takes in the cache (before HDF5's small per-chunk overhead)."""
    value = np.dtype(dtype).itemsize
    if not topk:
        return vocab_size * value
    return topk * (value + token_dtype(vocab_size).itemsize) + 4 * grid


class TokenDigest:
    """sha256 of every dataset's bytes in window order: written with the file, recomputed by every reader."""

    def __init__(self):
        self._sha: dict[str, "hashlib._Hash"] = {}

    def update(self, split: str, block: dict[str, np.ndarray]) -> None:
        for name in sorted(block):
            self._sha.setdefault(f"{split}/{name}", hashlib.sha256()).update(np.ascontiguousarray(block[name]).tobytes())

    def digests(self) -> dict[str, str]:
        return {key: h.hexdigest() for key, h in sorted(self._sha.items())}

    def problem(self, attrs: dict) -> str | None:
        try:
            recorded = json.loads(attrs["digests"])
        except (KeyError, TypeError, ValueError):
            return "holds no digests of its values and attributes, so it cannot prove it is what was made; rebuild it"
        if not isinstance(recorded, dict) or recorded.get(ATTRS_DIGEST) != attrs_digest(attrs):
            return "attributes differ from the digest written with them: the file was edited after it was made"
        recorded = {k: v for k, v in recorded.items() if k != ATTRS_DIGEST}
        changed = sorted(k for k in recorded.keys() | self.digests().keys() if recorded.get(k) != self.digests().get(k))
        if changed:
            return f"/{', /'.join(changed)} differ from the digest written with them: the file was edited after it was made"
        return None


class TokenCacheWriter:
    """Blocks of windows, written in order per split; the digest follows the bytes as stored."""

    def __init__(self, f: h5py.File, windows: dict[str, int], context: int, vocab_size: int, topk: int, dtype: str,
                 grid: int):
        self.f, self.dtype, self.digest = f, np.dtype(dtype), TokenDigest()
        self._written = {split: 0 for split in windows}
        for split, n in windows.items():
            g = f.create_group(split)
            shapes = ({"logits": ((n, context, vocab_size), self.dtype)} if not topk else
                      {"topk_logits": ((n, context, topk), self.dtype),
                       "topk_ids": ((n, context, topk), token_dtype(vocab_size)),
                       "tail_odds": ((n, context, grid), np.dtype(np.float32))})
            for name, (shape, dtype) in shapes.items():
                g.create_dataset(name, shape=shape, dtype=dtype, fletcher32=True,
                                 chunks=(max(1, min(_WINDOWS_PER_CHUNK, n)), *shape[1:]) if n else None)

    def write(self, split: str, block: dict[str, np.ndarray]) -> None:
        lo = self._written[split]
        stored = {}
        for name, values in block.items():
            ds = self.f[split][name]
            values = values.astype(ds.dtype, copy=False)
            ds[lo: lo + len(values)] = values
            stored[name] = values
        self.digest.update(split, stored)
        self._written[split] = lo + len(next(iter(block.values())))

    def rows_written(self, split: str) -> int:
        return self._written[split]


@contextlib.contextmanager
def write_token_cache(path: Path, *, windows: dict[str, int], context: int, vocab_size: int, topk: int,
                      dtype: str, temperatures: tuple[float, ...], attrs: dict) -> Iterator[TokenCacheWriter]:
    """A new per-token cache; on a clean exit its digests are sealed, ``complete`` set and the file moved
    into place (never half-written at ``path``)."""
    if not 0 <= topk < vocab_size:
        raise UsageError(f"CACHE_TOPK must lie in [0, {vocab_size}) for a vocabulary of {vocab_size} (0: dense), "
                         f"got {topk}")
    if dtype not in ("float16", "float32"):
        raise UsageError(f"CACHE_DTYPE must be float16 or float32, got {dtype!r}")
    need = sum(windows.values()) * context * token_bytes_per_position(vocab_size, topk, dtype,
                                                                      len(temperatures)) + (1 << 20)
    need_space(path, need)
    with disk_full_is_one_line(path, need), atomic_path(path) as tmp, reserved_hdf5(tmp, need) as f:
        f.attrs.update({
            "format_version": TOKEN_FORMAT_VERSION, "kind": "tokens", "storage": "topk" if topk else "full",
            "topk": int(topk), "dtype": dtype, "vocab_size": int(vocab_size), "context": int(context),
            "temperatures": np.asarray(temperatures, np.float64), "complete": False,
            **{f"{split}_windows": int(n) for split, n in windows.items()},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **code_version(), **attrs,
            "stride": int(context),        # windows never overlap: every position is scored once (the reader checks)
        })
        writer = TokenCacheWriter(f, windows, context, vocab_size, topk, dtype, len(temperatures))
        yield writer
        for split, n in windows.items():
            if writer.rows_written(split) != n:
                raise RuntimeError(f"token cache writer filled {writer.rows_written(split)} of {n} {split} windows")
        f.attrs["digests"] = json.dumps({**writer.digest.digests(),
                                         ATTRS_DIGEST: attrs_digest({k: plain(v) for k, v in f.attrs.items()})},
                                        sort_keys=True)
        f.attrs["complete"] = True
