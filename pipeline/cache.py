"""The logit cache: the one module that knows the HDF5 layout (see docs/CACHE_FORMAT.md).

Layout, format_version 1, ``storage = "full"``::

    /train/logits   (N, C) float32|float16  teacher logits divided by attrs['temperature']
    /train/labels   (N,)   uint8..uint64    hard labels, so a student needs only cache + images
    /train/index    (N,)   uint8..uint64    dataset row of each cache row; always 0..N-1
    (integer datasets use the smallest unsigned type that fits, with shuffle + gzip)
    /test/...       the same for the test split (for reports)

With ``VIEWS=K`` (K >= 2) a third split holds the teacher's logits for K augmented views
of every training image (see ``pipeline.views``), row i * K + j being view j of image i::

    /train_views/logits  (N*K, C)  teacher logits of the view, divided by the temperature
    /train_views/params  (N*K, 3)  uint8 dy, dx, flip: the view, re-applied by ``apply_views``
    /train_views/labels, index     the image's label, and its dataset row i (so index = row // K)

and the attributes ``views`` (K), ``view_seed`` and ``view_pad`` say how the params were
drawn (``pipeline.views.draw_view_params``), so the views can be rebuilt bit-for-bit.

With ``MIXUP=a`` (attribute ``view_mixup`` = a > 0) every view is also a mixup pair, and
the view split holds what the blend needs (see ``pipeline.views.mix_views``)::

    /train_views/mix_partner (N*K,) uint   dataset row of the image blended in
    /train_views/mix_weight  (N*K,) uint8  w in [128, 255]: the view is (w*a + (255-w)*b) / 255

An ensemble cache (``softcache ensemble``, attribute ``members`` > 1) also keeps every
member's logits, so a student can use their mean (``logits``, the default), the mean of
their probabilities, or one member::

    /<split>/member_logits (rows, M, C)  member m's logits, divided by the temperature
    /<split>/logits        (rows, C)     their mean

``storage = "topk"`` replaces ``logits`` by the k largest logits per row and what is needed
to rebuild the rest::

    /train/topk_logits  (N, k) float32|float16  the k largest stored logits, descending
    /train/topk_classes (N, k) uint8..uint64    their classes
    /train/tail_logit   (N,)   float32|float16  the one value every other class gets, chosen so
                                                the tail's total probability at the stored
                                                temperature is exact: LSE(tail) - log(C - k)

Attributes: format_version, storage, topk, temperature, num_classes, teacher_fingerprint,
dataset_fingerprint, teacher, teacher_test_acc, created, producer, complete (and views,
view_seed, view_pad, view_mixup when views are cached; members, member_names,
member_test_acc, ensemble_probs_test_acc for an ensemble; published, published_record
for a published cache).

Every dataset carries HDF5's fletcher32 checksum, so a flipped byte fails the read
instead of silently changing a soft target. ``complete`` is written last, and the file
gets its final name only after that (``pipeline.files.atomic_path``). Readers get dense
(N, C) logits whatever the storage, so nothing downstream knows the difference.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch

from pipeline.errors import UsageError
from pipeline.files import atomic_path

__all__ = ["FORMAT_VERSION", "VIEW_SPLIT", "COMBINES", "CacheWriter", "write_cache", "LogitCache",
           "CacheExpectations", "parse_combine"]

FORMAT_VERSION = 1
SPLITS = ("train", "test")
VIEW_SPLIT = "train_views"
_REBUILD = "run 'make teacher-logits' to rebuild it"
_ROW_DATASETS = ("labels", "index")
_MIX_DATASETS = ("mix_partner", "mix_weight")
COMBINES = ("logits", "probs")     # ensemble targets: mean of logits, mean of probabilities (or a member number)


def parse_combine(value: str) -> str | int:
    """COMBINE as given ('logits', 'probs' or a member number) -> 'logits', 'probs' or int."""
    text = str(value).strip()
    if text in COMBINES:
        return text
    if text.isdigit():
        return int(text)
    raise UsageError(f"COMBINE must be logits, probs or a member number (0, 1, ...), got {value!r}")


def _smallest_uint(largest: int) -> str:
    return next(t for t in ("uint8", "uint16", "uint32", "uint64") if largest <= np.iinfo(t).max)


def _topk_split(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, C) logits -> top-k values (B, k) descending, their classes (B, k), tail logit (B,)."""
    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    values, classes = torch.topk(z, k, dim=1)
    rest = z.scatter(1, classes, float("-inf"))
    tail = torch.logsumexp(rest, dim=1) - math.log(z.shape[1] - k)
    return values.numpy(), classes.numpy(), tail.numpy()


class CacheWriter:
    """Preallocated HDF5 datasets filled in row blocks; use :func:`write_cache` to get one."""

    def __init__(self, f: h5py.File, rows: dict[str, int], num_classes: int, dtype: str, topk: int,
                 members: int = 0, mixup: bool = False, train_rows: int = 0):
        self._f = f
        self._topk = topk
        self._written = {s: 0 for s in rows}
        class_dtype = _smallest_uint(num_classes - 1)
        for split, n in rows.items():
            g = f.create_group(split)
            chunk_rows = max(1, min(n, 8192))

            def add(name, width, dt, compress=False, depth=0):
                # Integers (labels, index, classes) shrink a lot under shuffle + gzip; logits
                # barely do, so they stay uncompressed and fast to read.
                # maxshape lets a split have zero rows (a chunk may not exceed a fixed shape).
                shape, chunks = ((n, width), (chunk_rows, width)) if width else ((n,), (chunk_rows,))
                if depth:               # (rows, members, classes)
                    shape, chunks = (n, depth, width), (max(1, chunk_rows // depth), depth, width)
                extra = {"shuffle": True, "compression": "gzip", "compression_opts": 4} if compress else {}
                g.create_dataset(name, shape, dtype=dt, chunks=chunks, maxshape=(None, *shape[1:]),
                                 fletcher32=True, **extra)

            if topk:
                add("topk_logits", topk, dtype)
                add("topk_classes", topk, class_dtype, compress=True)
                add("tail_logit", 0, dtype)
            else:
                add("logits", num_classes, dtype)
            add("labels", 0, class_dtype, compress=True)
            add("index", 0, _smallest_uint(max(n - 1, 0)), compress=True)
            if members:
                add("member_logits", num_classes, dtype, depth=members)
            if split == VIEW_SPLIT:
                add("params", 3, "uint8", compress=True)
                if mixup:
                    add("mix_partner", 0, _smallest_uint(max(train_rows - 1, 0)), compress=True)
                    add("mix_weight", 0, "uint8", compress=True)

    def write(self, split: str, start: int, logits: np.ndarray, labels: np.ndarray, index: np.ndarray,
              params: np.ndarray | None = None, mix: tuple[np.ndarray, np.ndarray] | None = None,
              member_logits: np.ndarray | None = None) -> None:
        """Rows [start, start + B) of ``split``. logits: (B, C) already divided by the temperature;
        params: (B, 3) the views' parameters and mix: their partners and weights, for the view
        split only; member_logits: (B, M, C) for an ensemble."""
        stop = start + len(logits)
        g = self._f[split]
        if self._topk:
            values, classes, tail = _topk_split(logits, self._topk)
            g["topk_logits"][start:stop] = values
            g["topk_classes"][start:stop] = classes
            g["tail_logit"][start:stop] = tail
        else:
            g["logits"][start:stop] = logits
        g["labels"][start:stop] = labels
        g["index"][start:stop] = index
        if params is not None:
            g["params"][start:stop] = params
        if mix is not None:
            g["mix_partner"][start:stop], g["mix_weight"][start:stop] = mix
        if member_logits is not None:
            g["member_logits"][start:stop] = member_logits
        self._written[split] = max(self._written[split], stop)

    def rows_written(self, split: str) -> int:
        return self._written[split]


@contextlib.contextmanager
def write_cache(path: Path, *, rows: dict[str, int], num_classes: int, temperature: float,
                attrs: dict, dtype: str = "float32", topk: int = 0, members: int = 0) -> Iterator[CacheWriter]:
    """Open a new cache for writing; on a clean exit mark it complete and move it into place.

    ``topk = 0`` stores every logit; ``0 < topk < num_classes`` stores the compact form.
    ``rows`` may include the view split, and then ``attrs`` must say ``views``, ``view_seed``
    and ``view_pad`` (and ``view_mixup`` > 0 when the views are mixup pairs). ``members`` > 1
    adds every split's ``member_logits`` (an ensemble, which stores every logit).
    """
    if members and topk:
        raise UsageError("an ensemble cache stores every logit; use CACHE_TOPK=0 with TEACHERS > 1")
    if dtype not in ("float32", "float16"):
        raise UsageError(f"cache dtype must be float32 or float16, got {dtype}")
    if not 0 <= topk < num_classes:
        raise UsageError(f"CACHE_TOPK must lie in [0, {num_classes}) for {num_classes} classes "
                         f"(0 stores every logit), got {topk}")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({
                "format_version": FORMAT_VERSION,
                "storage": "topk" if topk else "full",
                "topk": int(topk),
                "dtype": dtype,
                "temperature": float(temperature),
                "num_classes": int(num_classes),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "complete": False,
                **attrs,
            })
            writer = CacheWriter(f, rows, num_classes, dtype, topk, members=members,
                                 mixup=float(attrs.get("view_mixup", 0)) > 0, train_rows=rows.get("train", 0))
            yield writer
            for split, n in rows.items():
                if writer.rows_written(split) != n:
                    raise RuntimeError(f"cache writer filled {writer.rows_written(split)} of {n} {split} rows")
            f.attrs["complete"] = True


@dataclass(frozen=True)
class CacheExpectations:
    """What the reader checks the file against; ``None`` means 'not checked'."""

    dataset_fingerprint: str | None = None
    teacher_fingerprint: str | None = None
    num_classes: int | None = None
    train_rows: int | None = None


class LogitCache:
    """A verified view of one cache file: in memory when it fits, read per batch when not.

    Opening it checks everything a student relies on: the file is readable and complete,
    every checksum holds, shapes agree, logits are finite, labels lie in [0, C), rows are
    in dataset order, and the fingerprints match the caller's expectations. Any failure
    is a :class:`UsageError` that says which make target rebuilds the cache. The check
    reads the file in row blocks, so a cache larger than memory is checked without
    loading it; such a cache is then streamed (``in_memory`` is False): each batch's rows
    are read from the file, which is opened lazily by the process that reads, so the
    object can be handed to DataLoader workers (each opens its own handle after fork).
    """

    def __init__(self, path: Path, expect: CacheExpectations = CacheExpectations(), *,
                 memory_limit_bytes: int = 4 << 30, block_rows: int = 65536, combine: str | int = "logits"):
        """``combine`` picks an ensemble's targets: 'logits' (the mean of the members' logits, also
        what a single teacher's cache holds), 'probs' (the mean of their probabilities at the
        student's T) or a member number."""
        self.path = Path(path)
        self.combine = parse_combine(combine)
        if not self.path.is_file():
            raise UsageError(f"cache {self.path} is missing; {_REBUILD}")
        self.attrs: dict = {}
        self._handle: h5py.File | None = None
        self._handle_pid: int | None = None
        self._memo: tuple = (None, None)
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = {k: _plain(v) for k, v in f.attrs.items()}
                self._check_attrs()
                self._check_combine()
                self.splits = SPLITS + ((VIEW_SPLIT,) if self.views else ())
                self._shapes = {split: {name: ds.shape for name, ds in f[split].items()} for split in self.splits}
                self._check_shapes()
                dense_bytes = sum(self.rows(s) for s in self.splits) * self.num_classes * 4
                self.in_memory = dense_bytes * max(1, self.members if self.combine == "probs" else 1) \
                    <= memory_limit_bytes
                if self.combine == "probs" and not self.in_memory:
                    raise UsageError(f"cache {self.path} is too large to hold in memory, which COMBINE=probs "
                                     f"needs; raise --cache-memory-mb or use COMBINE=logits")
                self._scan(f, block_rows)
        except UsageError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise UsageError(f"cache {self.path} is unreadable or corrupt ({_first_line(exc)}); {_REBUILD}") from None
        self._check_expectations(expect)

    # --- checks ---------------------------------------------------------------------
    def _fail(self, what: str) -> UsageError:
        if self.attrs.get("published"):     # made elsewhere: rebuilding it here is not the fix
            return UsageError(f"published cache {self.path}: {what}; it can only be used as published, with the "
                              f"dataset it was made from (the full Fashion-MNIST, LIMIT=0): restore it with "
                              f"'git checkout {self.path}', or drop TEACHER=published to train a teacher here")
        return UsageError(f"cache {self.path}: {what}; {_REBUILD}")

    def _check_attrs(self) -> None:
        if not self.attrs.get("complete", False):
            raise self._fail("not marked complete (the teacher pass did not finish)")
        if self.attrs.get("format_version") != FORMAT_VERSION:
            raise self._fail(f"format_version {self.attrs.get('format_version')} is not {FORMAT_VERSION}")
        t = self.attrs.get("temperature")
        if not isinstance(t, float) or not np.isfinite(t) or t <= 0:
            raise self._fail(f"temperature attribute {t!r} is not a positive number")
        k = self.attrs.get("views", 0)
        if not isinstance(k, int) or k < 0 or (k >= 2 and not all(
                isinstance(self.attrs.get(a), int) and self.attrs[a] >= 0 for a in ("view_seed", "view_pad"))):
            raise self._fail(f"views attributes are broken (views {k!r}, view_seed and view_pad must be integers)")
        mixup = self.attrs.get("view_mixup", 0)
        if not isinstance(mixup, (int, float)) or not mixup >= 0:
            raise self._fail(f"view_mixup attribute {mixup!r} is not a number >= 0")
        m = self.attrs.get("members", 0)
        if not isinstance(m, int) or m < 0 or m == 1:
            raise self._fail(f"members attribute {m!r} is not an ensemble size (0, or 2 and more)")

    def _check_combine(self) -> None:
        if self.combine == "logits":
            return
        what = f"member {self.combine}" if isinstance(self.combine, int) else "COMBINE=probs"
        if not self.members:
            raise UsageError(f"cache {self.path} holds one teacher's logits, so {what} has no ensemble to pick "
                             f"from; build an ensemble cache with TEACHERS=3, or use COMBINE=logits")
        if isinstance(self.combine, int) and self.combine >= self.members:
            raise UsageError(f"cache {self.path} holds {self.members} ensemble members (0-{self.members - 1}), "
                             f"so member {self.combine} is missing from it; use COMBINE=0..{self.members - 1} "
                             f"or rebuild it with TEACHERS={self.combine + 1}")

    @property
    def _value_names(self) -> tuple[str, ...]:
        """The datasets a row's (combined) logits are read from."""
        if isinstance(self.combine, int):
            return ("member_logits",)
        return ("topk_logits", "topk_classes", "tail_logit") if self.attrs.get("topk", 0) else ("logits",)

    def _row_names(self, split: str) -> tuple[str, ...]:
        """Every dataset the split must have."""
        stored = ("topk_logits", "topk_classes", "tail_logit") if self.attrs.get("topk", 0) else ("logits",)
        members = ("member_logits",) if self.members else ()
        views = ("params", *(_MIX_DATASETS if self.mixup else ())) if split == VIEW_SPLIT else ()
        return (*stored, *members, *_ROW_DATASETS, *views)

    def _dense_block(self, block: dict) -> np.ndarray:
        """Stored-scale (B, C) float32 logits of a block, as ``combine`` picks them."""
        if isinstance(self.combine, int):
            return block["member_logits"][:, self.combine].astype(np.float32)
        return _dense(block, self.num_classes)

    def _check_shapes(self) -> None:
        c, k = self.num_classes, int(self.attrs.get("topk", 0))
        for split, shapes in self._shapes.items():
            missing = [name for name in self._row_names(split) if name not in shapes]
            if missing:
                raise self._fail(f"{split} lacks {', '.join(missing)}")
            n = shapes["labels"][0] if len(shapes["labels"]) == 1 else -1
            if split == VIEW_SPLIT and n != self.rows("train") * self.views:
                raise self._fail(f"{split} has {n} rows, not {self.views} views of {self.rows('train')} images")
            want = {"logits": (n, c), "topk_logits": (n, k), "topk_classes": (n, k), "tail_logit": (n,),
                    "labels": (n,), "index": (n,), "params": (n, 3), "member_logits": (n, self.members, c),
                    "mix_partner": (n,), "mix_weight": (n,)}
            wrong = {name: shapes[name] for name in self._row_names(split) if shapes[name] != want[name]}
            if wrong:
                raise self._fail(f"{split} shapes disagree with {n} rows and {c} classes: {wrong}")

    def _check_block(self, split: str, lo: int, block: dict) -> None:
        c = self.num_classes
        for name in (*self._value_names, *(("member_logits",) if self.members else ())):
            if name != "topk_classes" and not np.isfinite(block[name]).all():
                raise self._fail(f"{split} logits contain NaN or Inf")
        if "topk_classes" in block and len(block["topk_classes"]) and block["topk_classes"].max() >= c:
            raise self._fail(f"{split} top-k classes lie outside [0, {c})")
        labels = block["labels"]
        if len(labels) and (labels.min() < 0 or labels.max() >= c):
            raise self._fail(f"{split} labels lie outside [0, {c})")
        rows = np.arange(lo, lo + len(labels))
        if not np.array_equal(block["index"], rows // self.views if split == VIEW_SPLIT else rows):
            raise self._fail(f"{split} rows are not in dataset order")
        if split == VIEW_SPLIT and len(labels):
            params, pad = block["params"], self.attrs["view_pad"]
            if params[:, :2].max() > 2 * pad or params[:, 2].max() > 1:
                raise self._fail(f"{split} view params lie outside the {pad}-pixel crop and flip they claim")
            if self.mixup and (block["mix_partner"].max() >= self.train_rows or block["mix_weight"].min() < 128):
                raise self._fail(f"{split} mixup partners or weights lie outside [0, {self.train_rows}) and [128, 255]")

    def _scan(self, f: h5py.File, block_rows: int) -> None:
        """Read every row once, in blocks: check it, fingerprint it, keep labels (and logits in memory)."""
        digests: dict[str, "hashlib._Hash"] = {}      # one per dataset: independent of block size
        self._labels, self._dense_logits, self._members, params, mix = {}, {}, {}, [], []
        keep_members = self.combine == "probs"
        for split in self.splits:
            n, g = self.rows(split), f[split]
            labels, dense = [np.empty(0, np.int64)], [np.empty((0, self.num_classes), np.float32)]
            members = [np.empty((0, self.members, self.num_classes), np.float32)]
            for lo in range(0, n, block_rows):
                block = {name: g[name][lo:lo + block_rows] for name in sorted(g)}
                self._check_block(split, lo, block)
                for name, values in block.items():
                    digests.setdefault(f"{split}/{name}", hashlib.sha256()).update(np.ascontiguousarray(values).tobytes())
                labels.append(block["labels"].astype(np.int64))
                if split == VIEW_SPLIT:
                    params.append(block["params"])
                    if self.mixup:
                        mix.append(np.stack([block["mix_partner"].astype(np.int64),
                                             block["mix_weight"].astype(np.int64)], axis=1))
                if self.in_memory:
                    dense.append(self._dense_block(block))
                if keep_members:
                    members.append(block["member_logits"].astype(np.float32))
            self._labels[split] = np.concatenate(labels)
            self._dense_logits[split] = np.concatenate(dense) if self.in_memory else None
            self._members[split] = np.concatenate(members) if keep_members else None
        self._view_params = np.concatenate(params).reshape(-1, self.views, 3) if params else None
        self._view_mix = np.concatenate(mix).reshape(-1, self.views, 2) if mix else None
        h = hashlib.sha256(repr(self.temperature).encode())
        for key in sorted(digests):
            h.update(key.encode() + digests[key].digest())
        self.fingerprint = h.hexdigest()[:16]

    def _check_expectations(self, e: CacheExpectations) -> None:
        checks = [
            ("dataset_fingerprint", e.dataset_fingerprint, self.attrs.get("dataset_fingerprint"),
             "was made from a different dataset"),
            ("teacher_fingerprint", e.teacher_fingerprint, self.attrs.get("teacher_fingerprint"),
             "was made by a different teacher"),
            ("num_classes", e.num_classes, self.num_classes, "has a different number of classes"),
            ("train_rows", e.train_rows, self.train_rows, "has a different number of training rows"),
        ]
        for name, want, got, what in checks:
            if want is not None and want != got:
                raise self._fail(f"{what} ({name} {got}, expected {want})")

    # --- reading --------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.attrs["num_classes"])

    def rows(self, split: str) -> int:
        return self._shapes[split]["labels"][0]

    @property
    def train_rows(self) -> int:
        return self.rows("train")

    @property
    def temperature(self) -> float:
        return float(self.attrs["temperature"])

    @property
    def views(self) -> int:
        """K, the augmented views cached per training image; 0 when there are none."""
        k = int(self.attrs.get("views", 0))
        return k if k >= 2 else 0

    @property
    def mixup(self) -> float:
        """The Beta parameter the views' mixup weights were drawn with; 0 when the views are not mixed."""
        return float(self.attrs.get("view_mixup", 0)) if self.views else 0.0

    @property
    def members(self) -> int:
        """Teachers in an ensemble cache; 0 for one teacher's cache."""
        return int(self.attrs.get("members", 0))

    def view_mix(self, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Mixup partners (N, k) int64 and weights (N, k) int64 of the first k views; None without mixup."""
        self.view_params(k)                 # the same checks and messages as for the views themselves
        if self._view_mix is None:
            return None
        mix = torch.from_numpy(self._view_mix[:, :k])
        return mix[..., 0].contiguous(), mix[..., 1].contiguous()

    def view_params(self, k: int | None = None) -> torch.Tensor:
        """(N, k, 3) int64: dy, dx, flip of the first k cached views of each training image."""
        k = self.views if k is None else k
        if not self.views:
            raise UsageError(f"cache {self.path} holds no augmented views, so REPLAY={k} has nothing to replay; "
                             f"rebuild it with 'make teacher-logits VIEWS={max(k, 2)}' or use REPLAY=0")
        if not 1 <= k <= self.views:
            raise UsageError(f"cache {self.path} holds {self.views} views per image, so REPLAY={k} cannot be "
                             f"replayed; use REPLAY <= {self.views} or rebuild the cache with VIEWS={k}")
        return torch.from_numpy(self._view_params[:, :k].astype(np.int64))

    def __getstate__(self) -> dict:
        # An open h5py handle must not cross a fork or a pickle: the reader reopens it.
        return {**self.__dict__, "_handle": None, "_handle_pid": None}

    def _file(self) -> h5py.File:
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = h5py.File(self.path, "r", rdcc_nbytes=64 << 20)
            self._handle_pid = os.getpid()
        return self._handle


    def _stored(self, split: str, idx: np.ndarray | None = None) -> np.ndarray:
        """Stored-scale logits of ``split`` (all rows, or rows ``idx``): (B, C) float32."""
        if self.in_memory:
            dense = self._dense_logits[split]
            return dense if idx is None else dense[idx]
        g = self._file()[split]
        if idx is None:
            return self._dense_block({name: g[name][()] for name in self._value_names})
        order = np.argsort(idx, kind="stable")              # h5py reads increasing indices only
        block = self._dense_block({name: g[name][idx[order]] for name in self._value_names})
        out = np.empty_like(block)
        out[order] = block
        return out

    def labels(self, split: str = "train") -> np.ndarray:
        return self._labels[split]

    def logits(self, split: str = "train") -> torch.Tensor:
        """Teacher logits at temperature 1: (N, C) float32 (the stored values times the temperature).
        With COMBINE=probs: log of the members' mean probability, whose argmax is the ensemble's vote."""
        if self.combine == "probs":
            return self.log_soft_targets(1.0, split)
        return torch.from_numpy(self._stored(split)) * self.temperature

    def soft_targets(self, T: float, split: str = "train") -> torch.Tensor:
        """softmax(z_stored * temperature / T): (N, C) float32, rows sum to 1."""
        return torch.softmax(self.logits(split) / T, dim=-1)

    def log_soft_targets(self, T: float, split: str = "train") -> torch.Tensor:
        """log_softmax(z_stored * temperature / T): (N, C) float32, for KL with log_target.
        With COMBINE=probs: log of the mean over members of softmax(z_m * temperature / T)."""
        if self.combine == "probs":
            z = torch.from_numpy(self._members[split]) * self.temperature
            return torch.logsumexp(torch.log_softmax(z / T, dim=-1), dim=1) - math.log(self.members)
        return torch.log_softmax(self.logits(split) / T, dim=-1)

    def batch_log_soft_targets(self, idx: torch.Tensor, T: float, split: str = "train") -> torch.Tensor:
        """log_softmax at T for rows idx (B,) int64: (B, C) float32, from memory or from the file."""
        if self.in_memory:
            if self._memo[0] != (T, split):
                self._memo = ((T, split), self.log_soft_targets(T, split))
            return self._memo[1][idx]
        z = torch.from_numpy(self._stored(split, idx.cpu().numpy())) * self.temperature
        return torch.log_softmax(z / T, dim=-1).to(idx.device)

    def batch_view_log_soft_targets(self, rows: torch.Tensor, view: torch.Tensor, T: float) -> torch.Tensor:
        """log_softmax at T of the teacher's logits for view ``view`` (B,) of training rows ``rows`` (B,)."""
        return self.batch_log_soft_targets(rows * self.views + view.to(rows.device), T, VIEW_SPLIT)

    def teacher_accuracy(self, split: str = "test") -> float:
        """Accuracy of the cached teacher logits against the cached labels."""
        return float((self.logits(split).argmax(dim=1).numpy() == self._labels[split]).mean())


def _dense(block: dict, num_classes: int) -> np.ndarray:
    """Stored-scale logits (B, C) float32 from one block of either storage form."""
    if "logits" in block:
        return block["logits"].astype(np.float32)
    dense = np.repeat(block["tail_logit"].astype(np.float32)[:, None], num_classes, axis=1)
    np.put_along_axis(dense, block["topk_classes"].astype(np.int64), block["topk_logits"].astype(np.float32), axis=1)
    return dense


def _plain(v):
    """h5py attribute values as plain Python values (numpy scalars and bytes unwrapped)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
