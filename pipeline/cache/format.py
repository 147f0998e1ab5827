"""The cache format: its layout, its writer, and the dense rebuild of stored logits.

This module and the reader (``pipeline.cache.reader``) are the only ones that open the HDF5 file
or know its groups; everything else asks the reader (see docs/CACHE_FORMAT.md).

Layout, format_version 1 (or 2, below), ``storage = "full"``::

    /train/logits   (N, C) float32|float16  teacher logits divided by attrs['temperature']
    /train/labels   (N,)   uint8..uint64    hard labels, so a student needs only cache + images
    /train/index    (N,)   uint8..uint64    dataset row of each cache row; always 0..N-1
    (integer datasets use the smallest unsigned type that fits, with shuffle + gzip)
    /test/...       the same for the test split (for reports)

With ``VIEWS=K`` (K >= 2) a third split holds the teacher's logits for K augmented views
of every training image (see ``pipeline.augment``), row i * K + j being view j of image i::

    /train_views/logits  (N*K, C)  teacher logits of the view, divided by the temperature
    /train_views/params  (N*K, 3)  uint8 dy, dx, flip: the view, re-applied by ``apply_views``
    /train_views/labels, index     the image's label, and its dataset row i (so index = row // K)

and the attributes ``views`` (K), ``view_seed`` and ``view_pad`` say how the params were
drawn (``pipeline.augment.draw_view_params``), so the views can be rebuilt bit-for-bit.

With ``MIXUP=a`` (attribute ``view_mixup`` = a > 0) every view is also a mixup pair, and
the view split holds what the blend needs (see ``pipeline.augment.mix_views``)::

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

Format version 2 adds a transfer set (``pipeline.data.transfer``): ``transfer_rows`` (R > 0)
unlabelled rows at the end of the train split, whose label is the value C (one past the last
class, so labels use the smallest unsigned type that holds C), with the attributes
``transfer`` (the set's name), ``transfer_fingerprint`` and ``transfer_labels_ignored``. Views
cover them like every other train row. A cache without a transfer set is written as version 1,
so older softcache reads it; version 1 readers refuse version 2, whose labels they would
take for a class.

Attributes: format_version, storage, topk, temperature, num_classes, teacher_fingerprint,
dataset_fingerprint, teacher, teacher_test_acc, created, producer, softcache_version and
source_digest (the code that wrote it, ``pipeline.provenance``), complete, digests (a JSON
object: the sha256 of every dataset's bytes in row order, read back after writing) and
teacher_train_acc (the stored train logits' accuracy on the labelled train rows), both
checked by every reader (``ContentDigest``; files made before them lack both) (and views,
view_seed, view_pad, view_mixup when views are cached; members, member_names,
member_test_acc, ensemble_probs_test_acc for an ensemble; published, published_record
for a published cache; dataset_source for a dataset prepared from an image folder: a JSON
object naming the folder, its classes and files, and the SHA-256 of the list of paths and of
the files' contents, ``pipeline.data.image_folder.FolderSource.record``).

Every dataset carries HDF5's fletcher32 checksum, so a flipped byte fails the read
instead of silently changing a soft target. ``complete`` is written last, and the file
gets its final name only after that (``pipeline.files.atomic_path``). Readers get dense
(N, C) logits whatever the storage, so nothing downstream knows the difference.
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

from pipeline.digests import ATTRS_DIGEST, attrs_digest, plain  # noqa: F401  (re-exported)
from pipeline.errors import UsageError
from pipeline.files import atomic_path, disk_full_is_one_line, need_space, reserved_hdf5
from pipeline.provenance import code_version
from pipeline.settings import check, check_ensemble_storage

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "GRID_DATASET", "TRANSFER_ATTRS", "SPLITS", "VIEW_SPLIT", "COMBINES", "ROW_DATASETS",
           "MIX_DATASETS", "CacheWriter", "ContentDigest", "content_digest",
           "write_cache", "estimated_bytes", "parse_combine", "stored_names", "split_names", "dense_logits", "plain",
           "read_attrs", "read_arrays", "storage_bytes", "attrs_digest", "seal", "structure_problem", "ATTRS_DIGEST",
           "CLASS_NAMES", "write_class_names", "file_attrs"]

FORMAT_VERSION = 3                # the newest this code writes and reads
READABLE_VERSIONS = (1, 2, 3)
SPLITS = ("train", "test")
VIEW_SPLIT = "train_views"
ROW_DATASETS = ("labels", "index")
MIX_DATASETS = ("mix_partner", "mix_weight")
TOPK_DATASETS = ("topk_logits", "topk_classes", "tail_logit")
GRID_DATASET = "tail_logits"       # format 3: the tail's value at each temperature of the grid
TRANSFER_ATTRS = ("transfer", "transfer_rows", "transfer_fingerprint", "transfer_labels_ignored")
COMBINES = ("logits", "probs")     # ensemble targets: mean of logits, mean of probabilities (or a member number)


def stored_names(topk: int, grid: bool = False) -> tuple[str, ...]:
    """The datasets a split's logits are stored in: dense, or top-k plus the tail (and, with a temperature
    grid, the tail's value at each of its temperatures)."""
    return (*TOPK_DATASETS, *((GRID_DATASET,) if grid else ())) if topk else ("logits",)


def split_names(split: str, *, topk: int, members: int, mixup: bool, grid: bool = False) -> tuple[str, ...]:
    """Every dataset a split must have."""
    views = ("params", *(MIX_DATASETS if mixup else ())) if split == VIEW_SPLIT else ()
    return (*stored_names(topk, grid), *(("member_logits",) if members else ()), *ROW_DATASETS, *views)


def parse_combine(value: str | int) -> str | int:
    """COMBINE as given ('logits', 'probs' or a member number) -> 'logits', 'probs' or int, checked by the
    settings table's one parser (one wording everywhere)."""
    text = check("COMBINE", str(value).strip())
    return int(text) if text.isdigit() else text


def _smallest_uint(largest: int) -> str:
    return next(t for t in ("uint8", "uint16", "uint32", "uint64") if largest <= np.iinfo(t).max)


def _topk_split(logits: np.ndarray, k: int, temperature: float = 1.0, grid: tuple[float, ...] = ()):
    """(B, C) stored logits -> top-k values (B, k) descending, their classes (B, k), tail logit (B,), and
    (B, G) the tail's value at each grid temperature T (None without a grid).

    The tail's value is the one logit every tail class would need for the tail's total probability to be
    exact: at the stored temperature for ``tail_logit``; at T (where the targets are softmax(z / T), z the
    stored logits times ``temperature``) for column T of the grid, T/temperature * (LSE_tail(z/T) - log(C-k))."""
    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    values, classes = torch.topk(z, k, dim=1)
    rest = z.scatter(1, classes, float("-inf"))
    spread = math.log(z.shape[1] - k)
    tail = torch.logsumexp(rest, dim=1) - spread
    tails = torch.stack([T / temperature * (torch.logsumexp(rest * (temperature / T), dim=1) - spread)
                         for T in grid], dim=1) if grid else None
    return values.numpy(), classes.numpy(), tail.numpy(), None if tails is None else tails.numpy()


class CacheWriter:
    """Preallocated HDF5 datasets filled in row blocks; use :func:`write_cache` to get one."""

    def __init__(self, f: h5py.File, rows: dict[str, int], num_classes: int, dtype: str, topk: int,
                 members: int = 0, mixup: bool = False, train_rows: int = 0, unlabelled: bool = False,
                 temperature: float = 1.0, grid: tuple[float, ...] = ()):
        self._f = f
        self._topk, self._temperature, self._grid = topk, temperature, grid
        self._written = {s: 0 for s in rows}
        class_dtype = _smallest_uint(num_classes - 1)
        label_dtype = _smallest_uint(num_classes if unlabelled else num_classes - 1)   # C: "no label"
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
                if grid:
                    add(GRID_DATASET, len(grid), "float32")
            else:
                add("logits", num_classes, dtype)
            add("labels", 0, label_dtype, compress=True)
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
            values, classes, tail, tails = _topk_split(logits, self._topk, self._temperature, self._grid)
            g["topk_logits"][start:stop] = values
            g["topk_classes"][start:stop] = classes
            g["tail_logit"][start:stop] = tail
            if tails is not None:
                g[GRID_DATASET][start:stop] = tails
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
                attrs: dict, dtype: str = "float32", topk: int = 0, members: int = 0,
                temperatures: tuple[float, ...] = ()) -> Iterator[CacheWriter]:
    """Open a new cache for writing; on a clean exit mark it complete and move it into place.

    ``topk = 0`` stores every logit; ``0 < topk < num_classes`` stores the compact form, and with a grid of
    ``temperatures`` (format 3) the tail's exact total at each of them, which a reader then requires.
    ``rows`` may include the view split, and then ``attrs`` must say ``views``, ``view_seed``
    and ``view_pad`` (and ``view_mixup`` > 0 when the views are mixup pairs). ``members`` > 1
    adds every split's ``member_logits`` (an ensemble, which stores every logit).
    """
    check_ensemble_storage(members, topk)
    check("CACHE_DTYPE", dtype)
    if not 0 <= topk < num_classes:
        raise UsageError(f"CACHE_TOPK must lie in [0, {num_classes}) for {num_classes} classes "
                         f"(0 stores every logit), got {topk}")
    transfer = int(attrs.get("transfer_rows", 0)) > 0
    grid = tuple(float(t) for t in temperatures) if topk else ()
    need = estimated_bytes(rows, num_classes, dtype, topk, members) + 4 * len(grid) * sum(rows.values())
    need_space(path, need)
    with disk_full_is_one_line(path, need), atomic_path(path) as tmp:
        with reserved_hdf5(tmp, need) as f:       # the space first: HDF5 meets no full disk half-way
            f.attrs.update({
                "format_version": 3 if grid else 2 if transfer else 1,   # the oldest that describes the file
                **({"temperatures": np.asarray(grid, np.float64)} if grid else {}),
                "storage": "topk" if topk else "full",
                "topk": int(topk),
                "dtype": dtype,
                "temperature": float(temperature),
                "num_classes": int(num_classes),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "complete": False,
                **code_version(),
                **{k: v for k, v in attrs.items() if k != CLASS_NAMES},
            })
            if CLASS_NAMES in attrs:
                write_class_names(f, attrs[CLASS_NAMES])
            writer = CacheWriter(f, rows, num_classes, dtype, topk, members=members,
                                 mixup=float(attrs.get("view_mixup", 0)) > 0, train_rows=rows.get("train", 0),
                                 unlabelled=transfer, temperature=float(temperature), grid=grid)
            yield writer
            for split, n in rows.items():
                if writer.rows_written(split) != n:
                    raise RuntimeError(f"cache writer filled {writer.rows_written(split)} of {n} {split} rows")
            seal(f)                                 # what was written, read back
            f.attrs["complete"] = True


class ContentDigest:
    """What a cache's values were when written: a sha256 of every dataset's bytes in row order (so
    independent of how the rows are read in blocks), of every attribute, and the teacher's accuracy on
    the labelled train rows as stored. Fletcher32 catches bit rot; this catches an edit made with h5py,
    whose checksums are recomputed (attributes ``digests`` and ``teacher_train_acc``). A file without
    them cannot prove anything, and is refused unless the reader is told to trust it."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self._sha: dict[str, "hashlib._Hash"] = {}
        self._correct = self._labelled = 0

    def update(self, split: str, block: dict[str, np.ndarray]) -> None:
        for name in sorted(block):
            sha = self._sha.setdefault(f"{split}/{name}", hashlib.sha256())
            sha.update(np.ascontiguousarray(block[name]).tobytes())
        if split == "train":
            labels = block["labels"].astype(np.int64)
            labelled = labels < self.num_classes
            predicted = dense_logits(block, self.num_classes).argmax(axis=1)
            self._correct += int((predicted[labelled] == labels[labelled]).sum())
            self._labelled += int(labelled.sum())

    def digests(self) -> dict[str, str]:
        return {key: h.hexdigest() for key, h in sorted(self._sha.items())}

    def train_accuracy(self) -> float:
        return self._correct / max(self._labelled, 1)

    def attrs_json(self, attrs: dict) -> str:
        """The ``digests`` attribute of a file whose other attributes are ``attrs`` (teacher_train_acc set)."""
        return json.dumps({**self.digests(), ATTRS_DIGEST: attrs_digest(attrs)}, sort_keys=True)

    def problem(self, attrs: dict, trust_undigested: bool = False) -> str | None:
        """How the values and attributes read differ from those recorded at write time (None: they match).
        A file without digests (made by a softcache before them, or with them deleted) proves nothing: a
        problem, unless ``trust_undigested``."""
        try:
            recorded = json.loads(attrs["digests"]) if "digests" in attrs else None
        except (TypeError, ValueError):
            recorded = None
        if not isinstance(recorded, dict) or ATTRS_DIGEST not in recorded or "teacher_train_acc" not in attrs:
            if trust_undigested:
                return None
            return ("holds no digests of its values and attributes (made by an older softcache, or they were "
                    "removed), so it cannot prove it is what was made; rebuild it, or, for a file you trust as it "
                    "is, pass --trust-undigested-cache")
        if recorded[ATTRS_DIGEST] != attrs_digest(attrs):
            return "attributes differ from the digest written with them: the file was edited after it was made"
        recorded = {k: v for k, v in recorded.items() if k != ATTRS_DIGEST}
        found = self.digests()
        changed = sorted(k for k in recorded.keys() | found.keys() if recorded.get(k) != found.get(k))
        if changed:
            return (f"/{', /'.join(changed)} differ from the digest written with them: the file was edited after it "
                    f"was made")
        if abs(self.train_accuracy() - float(attrs["teacher_train_acc"])) > 1e-12:
            return (f"the teacher's accuracy on the train rows is {100 * self.train_accuracy():.2f}%, but "
                    f"{100 * float(attrs['teacher_train_acc']):.2f}% was recorded")
        return None


def seal(f: h5py.File) -> None:
    """Write the digests of a cache's values and attributes as they are now: the writer's last step before
    ``complete``, and how a maintainer re-seals a file whose values were checked another way (the published
    cache, made before digests covered attributes, re-scored against its record)."""
    splits = [split for split in (*SPLITS, VIEW_SPLIT) if split in f]
    content = content_digest(f, splits, int(f.attrs["num_classes"]))
    f.attrs["teacher_train_acc"] = content.train_accuracy()
    f.attrs["digests"] = content.attrs_json(file_attrs(f))


def content_digest(f: h5py.File, splits, num_classes: int, block_rows: int = 65536) -> ContentDigest:
    """Read a finished (or just written) cache's splits back in blocks into a :class:`ContentDigest`."""
    digest = ContentDigest(num_classes)
    for split in splits:
        g = f[split]
        n = g["labels"].shape[0]
        for lo in range(0, n, block_rows):
            digest.update(split, {name: g[name][lo:lo + block_rows] for name in g})
    return digest


def estimated_bytes(rows: dict[str, int], num_classes: int, dtype: str = "float32", topk: int = 0,
                    members: int = 0) -> int:
    """An upper bound on a cache file's size, to check for free space before writing it: every value
    uncompressed, 8-byte labels and index, 12 bytes of view params and mixup per view row, 1 MB of
    HDF5 structure."""
    item = np.dtype(dtype).itemsize
    width = (topk * (item + 8) + item) if topk else num_classes * item
    per_row = width + 16 + (members * num_classes * item if members else 0)
    return sum(n * (per_row + (12 if split == VIEW_SPLIT else 0)) for split, n in rows.items()) + (1 << 20)


def dense_logits(block: dict, num_classes: int, column: int | None = None) -> np.ndarray:
    """Stored-scale logits (B, C) float32 from one block of either storage form; with a grid's ``column``
    the tail classes take that temperature's value, so the tail's total is exact at it."""
    if "logits" in block:
        return block["logits"].astype(np.float32)
    tail = block["tail_logit"] if column is None else block[GRID_DATASET][:, column]
    dense = np.repeat(tail.astype(np.float32)[:, None], num_classes, axis=1)
    np.put_along_axis(dense, block["topk_classes"].astype(np.int64), block["topk_logits"].astype(np.float32), axis=1)
    return dense






def structure_problem(f: h5py.File, splits) -> str | None:
    """What in the file's structure a reader must not follow, before any value is read: links out of the
    file (external or soft), virtual datasets and external raw storage (they read another file, even a
    system file, as logits), groups that are not groups, and value datasets whose declared size the file
    cannot hold (a 12 KB file declaring 2^27 classes would make every reader allocate gigabytes)."""
    for name in f:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            return f"/{name} is a {type(link).__name__}, which points outside the file's own data"
    for split in splits:
        if split not in f or not isinstance(f[split], h5py.Group):
            return f"/{split} is missing or is not a group"
        g = f[split]
        for name in g:
            link = g.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                return f"/{split}/{name} is a {type(link).__name__}, which points outside the file's own data"
            ds = g[name]
            if not isinstance(ds, h5py.Dataset):
                return f"/{split}/{name} is not a dataset"
            if ds.is_virtual or ds.external:
                return f"/{split}/{name} reads its values from another file ({'virtual' if ds.is_virtual else 'external'} storage)"
            if name in ("logits", "topk_logits", "tail_logit", "member_logits"):
                declared = int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize
                if ds.id.get_storage_size() < declared:   # stored uncompressed and written in full by softcache
                    return (f"/{split}/{name} declares {ds.shape} values, {declared:,} bytes, but the file holds "
                            f"{ds.id.get_storage_size():,} bytes of it")
    return None


CLASS_NAMES = "class_names"      # a top-level dataset: HDF5 caps an attribute at 64 KB, about 4,000 names
MAX_NAME_BYTES = 1 << 30


def write_class_names(f: h5py.File, names) -> None:
    """Class names as a dataset of UTF-8 strings, so that any number of classes fits."""
    f.create_dataset(CLASS_NAMES, data=[str(n) for n in names], dtype=h5py.string_dtype())


def file_attrs(f: h5py.File) -> dict:
    """What a file says about itself, as plain values: its attributes, and its class names wherever they are
    (a dataset in new files, a list attribute in files made before classes could outgrow an attribute).
    Class names take part in the attribute digest either way."""
    attrs = {k: plain(v) for k, v in f.attrs.items()}
    if CLASS_NAMES in f:
        link = f.get(CLASS_NAMES, getlink=True)
        ds = f[CLASS_NAMES] if isinstance(link, h5py.HardLink) else None
        if (not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or h5py.check_string_dtype(ds.dtype) is None
                or ds.is_virtual or ds.external or ds.id.get_storage_size() > MAX_NAME_BYTES):
            raise ValueError(f"/{CLASS_NAMES} is not a plain one-dimensional dataset of strings")
        if CLASS_NAMES in attrs:
            raise ValueError(f"class names are both an attribute and the dataset /{CLASS_NAMES}")
        attrs[CLASS_NAMES] = [n.decode() if isinstance(n, bytes) else str(n) for n in ds[()]]
    return attrs


def read_attrs(path: Path) -> dict:
    """A cache's attributes (and class names) as plain values, unchecked (for tools that report on files)."""
    with h5py.File(path, "r") as f:
        return file_attrs(f)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a cache by 'split/name', unchecked: for comparing two files bit for bit."""
    with h5py.File(path, "r") as f:
        return {f"{g}/{d}": f[g][d][()] for g in f if isinstance(f[g], h5py.Group) for d in f[g]}


def storage_bytes(path: Path) -> dict[str, int]:
    """Bytes each split takes in the file (after compression)."""
    with h5py.File(path, "r") as f:
        return {split: sum(ds.id.get_storage_size() for ds in f[split].values())
                for split in f if isinstance(f[split], h5py.Group)}
