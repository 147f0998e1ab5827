"""Image folders: a user's PNG or JPEG files, one subfolder per class, prepared once into arrays.

The layout is torchvision's ``ImageFolder`` in each split::

    <folder>/train/<class>/**/<image>      <folder>/test/<class>/**/<image>

Classes are the subfolders of ``train/``, sorted by name, so a class's label is its place in
that order. Without ``test/``, a fraction of the training files (``TEST_FRACTION``) is held
out as the test split, drawn from ``SPLIT_SEED``; both are recorded. Files whose suffix is
no image suffix, and hidden files, are not images and are left out (``README.txt``,
``.DS_Store``).

Two passes over the files. The first reads every file once: its SHA-256, and its size and
mode from the header alone. That pass is all an unchanged rerun costs, and it is how a
changed folder is told: the prepared file records every file's path and digest, so an
added, removed, renamed or edited file, or a class folder renamed (which relabels its
files), is named in one line, and the prepared file, with the teacher's cache made from
it, is never replaced behind the user's back. The second pass decodes with Pillow, converts
to ``CHANNELS`` (1: greyscale, 3: RGB) and, for ``IMAGE_SIZE``, scales each image to cover
H x W (bilinear, antialiased when shrinking) and crops the center; an image already H x W
keeps its pixels exactly. Both passes run in threads: hashing, decoding and resizing
release the GIL.

Training rows are stored in an order drawn from ``SPLIT_SEED``, not in class order, so a
LIMIT=N subset holds every class and a streamed read of consecutive rows is a mixed batch.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.dataset import Dataset
from pipeline.data.folder_files import files_under
from pipeline.data.image_store import PreparedWriter
from pipeline.errors import UsageError
from pipeline.files import atomic_path, need_space
from pipeline.names import is_image_folder

__all__ = ["IMAGE_SUFFIXES", "FolderOptions", "FolderListing", "FolderSource", "is_image_folder", "list_folder",
           "read_folder", "prepare_folder", "read_images", "changes"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_BLOCK = 1024                 # images decoded per round of the thread pool


@dataclass(frozen=True)
class FolderOptions:
    """How a folder's files become rows: every field changes the prepared arrays."""

    image_size: tuple[int, int] | None = None   # (H, W); None: the images' own, which must all agree
    channels: int | None = None                 # 1 or 3; None: 1 when every image is greyscale, else 3
    bad_images: str = "fail"                    # fail: stop at the first unreadable file; skip: drop, count
    test_fraction: float = 0.1                  # held out as test/ when the folder has none
    split_seed: int = 0                         # draws the held-out files and the training rows' order

    def __post_init__(self):
        if self.channels not in (None, 1, 3):
            raise UsageError(f"CHANNELS must be auto, 1 or 3, got {self.channels}")
        if self.bad_images not in ("fail", "skip"):
            raise UsageError(f"BAD_IMAGES must be fail or skip, got {self.bad_images}")
        if not 0 < self.test_fraction < 1:
            raise UsageError(f"TEST_FRACTION must lie strictly between 0 and 1, got {self.test_fraction}")

    def settings(self) -> dict[str, str]:
        """The Make settings that give these options (the defaults left out)."""
        default = FolderOptions()
        size = self.image_size
        return {k: v for k, v, d in (
            ("IMAGE_SIZE", f"{size[0]}x{size[1]}" if size else "", ""),
            ("CHANNELS", str(self.channels or "auto"), "auto"), ("BAD_IMAGES", self.bad_images, default.bad_images),
            ("TEST_FRACTION", f"{self.test_fraction:g}", f"{default.test_fraction:g}"),
            ("SPLIT_SEED", str(self.split_seed), "0")) if v != d}


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class FolderListing:
    """Every image file of a folder, sorted: paths relative to the folder, as 'train/<class>/...'."""

    root: Path
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    has_test: bool

    def label(self, path: str) -> int:
        return self.classes.index(path.split("/")[1])

    def split_of(self, path: str) -> str:
        return path.split("/")[0]


def list_folder(root: Path) -> FolderListing:
    root = Path(root)
    if not is_image_folder(root):
        raise UsageError(f"{root} is no image folder: it needs train/<class>/ subfolders holding the images")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith(".")))
    has_test = (root / "test").is_dir()
    if has_test:
        extra = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in classes)
        if extra:
            raise UsageError(f"{root}/test holds class folders that train/ has not: {', '.join(extra[:5])}; "
                             f"every test class must have training images")
    paths = []
    for split in ("train", "test") if has_test else ("train",):
        for name in classes:
            folder = root / split / name
            if folder.is_dir():
                paths += files_under(root, _is_image_name, start=folder)
    if not any(p.startswith("train/") for p in paths):
        raise UsageError(f"{root}/train holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return FolderListing(root, classes, tuple(paths), has_test)


@dataclass(frozen=True)
class _Header:
    digest: bytes
    size: tuple[int, int] | None      # (H, W) from the header; None: unreadable
    mode: str | None
    error: str | None


def _read_header(path: Path) -> _Header:
    from PIL import Image, UnidentifiedImageError

    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _Header(b"\0" * 32, None, None, f"unreadable ({exc.strerror or exc})")
    digest = hashlib.sha256(raw).digest()
    try:
        with Image.open(io.BytesIO(raw)) as img:
            return _Header(digest, (img.height, img.width), img.mode, None)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        return _Header(digest, None, None, f"not a readable image ({exc})")


def _threads(fn, items, jobs: int):
    from joblib import Parallel, delayed

    return Parallel(n_jobs=jobs, prefer="threads")(delayed(fn)(item) for item in items)


def _decode(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray | str:
    """(C, H, W) uint8, or the reason the file could not be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if (img.height, img.width) != size:
                img = _cover_and_crop(img, size)
            array = np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        return f"not a readable image ({exc})"
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _cover_and_crop(img, size: tuple[int, int]):
    from PIL import Image

    height, width = size
    scale = max(height / img.height, width / img.width)
    scaled = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.resize(scaled, Image.Resampling.BILINEAR)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return img.crop((left, top, left + width, top + height))


@dataclass(frozen=True)
class FolderSource:
    """What a prepared folder dataset was made from: stored with it, and checked on every rerun."""

    folder: str
    classes: tuple[str, ...]
    paths: tuple[str, ...]            # every image file found, sorted (skipped ones included)
    digests: np.ndarray               # (files, 32) uint8: each file's SHA-256
    options: FolderOptions
    image_size: tuple[int, int]
    channels: int
    rows_train: np.ndarray            # indices into paths, in row order
    rows_test: np.ndarray
    skipped: tuple[str, ...] = ()
    limit: int = 0                    # LIMIT=N kept the first N training rows

    def paths_digest(self) -> str:
        return hashlib.sha256("\n".join(self.paths).encode()).hexdigest()

    def contents_digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.digests).tobytes()).hexdigest()

    def row_paths(self, split: str) -> list[str]:
        return [self.paths[i] for i in (self.rows_train if split == "train" else self.rows_test)]

    def record(self) -> dict:
        """The JSON summary kept in the prepared file and in every cache made from it."""
        o = self.options
        return {"kind": "image-folder", "folder": self.folder, "classes": list(self.classes), "files": len(self.paths),
                "image_size": list(self.image_size), "channels": self.channels, "bad_images": o.bad_images,
                "requested_image_size": list(o.image_size) if o.image_size else None,
                "requested_channels": o.channels, "test_fraction": o.test_fraction, "split_seed": o.split_seed,
                "held_out_test": not any(p.startswith("test/") for p in self.paths),
                "skipped": list(self.skipped), "limit": self.limit, "paths_digest": self.paths_digest(),
                "contents_digest": self.contents_digest()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"source": np.array(json.dumps(self.record())), "source_paths": np.array(self.paths),
                "source_digests": self.digests, "source_rows_train": self.rows_train,
                "source_rows_test": self.rows_test}

    @classmethod
    def from_arrays(cls, a) -> "FolderSource":
        r = json.loads(str(a["source"]))
        options = FolderOptions(tuple(r["requested_image_size"]) if r["requested_image_size"] else None,
                                r["requested_channels"], r["bad_images"], r["test_fraction"], r["split_seed"])
        return cls(r["folder"], tuple(r["classes"]), tuple(str(p) for p in a["source_paths"]),
                   np.asarray(a["source_digests"], dtype=np.uint8), options, tuple(r["image_size"]), r["channels"],
                   np.asarray(a["source_rows_train"], dtype=np.int64), np.asarray(a["source_rows_test"], np.int64),
                   tuple(r["skipped"]), r.get("limit", 0))


def _shape(listing: FolderListing, headers: list[_Header], options: FolderOptions) -> tuple[tuple[int, int], int]:
    readable = [(p, h) for p, h in zip(listing.paths, headers) if h.error is None]
    channels = options.channels or (1 if all(h.mode in _GREY_MODES for _, h in readable) else 3)
    if options.image_size:
        return options.image_size, channels
    sizes = Counter(h.size for _, h in readable)
    if len(sizes) > 1:
        (common, _), (other, _) = sizes.most_common(2)
        first = next(p for p, h in readable if h.size == common)
        odd = next(p for p, h in readable if h.size == other)
        raise UsageError(f"images differ in size: {first} is {common[0]}x{common[1]}, {odd} is {other[0]}x{other[1]} "
                         f"({len(sizes)} sizes); give IMAGE_SIZE=H or HxW to scale and center-crop every image")
    return next(iter(sizes)), channels


def _bad(listing: FolderListing, path: str, reason: str) -> UsageError:
    return UsageError(f"{listing.root / path}: {reason}; fix or delete it, or give BAD_IMAGES=skip to leave "
                      f"unreadable images out (they are counted)")


@dataclass
class _Plan:
    """What the header pass decided: every file's digest, the unreadable ones, the row shape, and the
    files each split decodes, in row order."""

    listing: FolderListing
    digests: np.ndarray
    bad: dict[str, str]
    size: tuple[int, int]
    channels: int
    train: np.ndarray
    test: np.ndarray

    def source(self, kept: dict[str, np.ndarray], options: FolderOptions, limit: int) -> FolderSource:
        return FolderSource(str(self.listing.root.resolve()), self.listing.classes, self.listing.paths, self.digests,
                            options, self.size, self.channels, kept["train"], kept["test"], tuple(sorted(self.bad)),
                            limit)

    def labels(self, kept: np.ndarray) -> np.ndarray:
        return np.array([self.listing.label(self.listing.paths[i]) for i in kept], dtype=np.int64)


def _plan(root: Path, options: FolderOptions, jobs: int) -> _Plan:
    """Training files in an order drawn from the split seed, test files in path order. Without test/,
    the held-out files are drawn from the same seed over every training file, readable or not, so one
    unreadable file does not move others between the splits."""
    listing = list_folder(root)
    headers = _threads(_read_header, [listing.root / p for p in listing.paths], jobs)
    bad = {p: h.error for p, h in zip(listing.paths, headers) if h.error}
    if bad and options.bad_images == "fail":
        path = next(iter(bad))
        raise _bad(listing, path, bad[path])
    size, channels = _shape(listing, headers, options)
    split = np.array([listing.split_of(p) for p in listing.paths])
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    train = train[np.random.default_rng(options.split_seed).permutation(len(train))]
    if not listing.has_test:
        held = max(1, round(options.test_fraction * len(train)))
        train, test = train[held:], np.sort(train[:held])
    readable = np.array([p not in bad for p in listing.paths], dtype=bool)
    digests = np.frombuffer(b"".join(h.digest for h in headers), dtype=np.uint8).reshape(-1, 32)
    return _Plan(listing, digests, bad, size, channels, train[readable[train]], test[readable[test]])


def _decoded_blocks(root: Path, paths, channels: int, size: tuple[int, int], jobs: int):
    """(paths, decoded) per block of ``_BLOCK`` files, in order; a decoded entry is a (C, H, W) uint8
    image or the reason the file could not be decoded."""
    for lo in range(0, len(paths), _BLOCK):
        block = paths[lo:lo + _BLOCK]
        yield block, _threads(lambda p: _decode(root / p, channels, size), block, jobs)


def _decode_in_order(plan: _Plan, order: np.ndarray, options: FolderOptions, jobs: int, write, limit: int = 0,
                     progress=None) -> np.ndarray:
    """Decode the files ``order`` block by block, hand each block of decoded images to ``write``, and
    return the files kept (all but the unreadable ones, the first ``limit`` when it is set)."""
    files, kept, order = plan.listing.paths, [], [int(i) for i in order]
    blocks = _decoded_blocks(plan.listing.root, [files[i] for i in order], plan.channels, plan.size, jobs)
    for lo, (block, decoded) in zip(range(0, len(order), _BLOCK), blocks):
        good = []
        for i, out in zip(order[lo:lo + _BLOCK], decoded):
            if not isinstance(out, str):
                good.append((i, out))
            elif options.bad_images == "fail":
                raise _bad(plan.listing, files[i], out)
            else:
                plan.bad[files[i]] = out
        good = good[:limit - len(kept)] if limit else good
        if good:
            write(np.stack([image for _, image in good]))
            kept += [i for i, _ in good]
        if progress is not None:
            progress(len(block))
        if limit and len(kept) >= limit:
            break
    return np.array(kept, dtype=np.int64)


def _check_rows(root: Path, kept: dict[str, np.ndarray]) -> None:
    if not len(kept["train"]) or not len(kept["test"]):
        raise UsageError(f"{root}: {len(kept['train'])} readable training and {len(kept['test'])} test images; "
                         f"each split needs at least one")


def read_folder(root: Path, options: FolderOptions = FolderOptions(), jobs: int = -1, limit: int = 0):
    """The folder's images, labels and class names in memory, as a :class:`pipeline.data.dataset.Dataset`
    with its source (``limit``: the first N training rows only)."""
    plan = _plan(root, options, jobs)
    blocks = {"train": [], "test": []}
    kept = {split: _decode_in_order(plan, getattr(plan, split), options, jobs, blocks[split].append,
                                    limit if split == "train" else 0) for split in blocks}
    _check_rows(root, kept)
    images = {split: np.concatenate(b) for split, b in blocks.items()}
    return Dataset(plan.listing.root.name, images["train"], plan.labels(kept["train"]), images["test"],
                   plan.labels(kept["test"]), plan.listing.classes, source=plan.source(kept, options, limit))


def prepare_folder(root: Path, out: Path, options: FolderOptions = FolderOptions(), limit: int = 0,
                   jobs: int = -1, progress=None) -> None:
    """Decode the folder straight into the prepared HDF5 file ``out``, block by block: memory stays at
    one block of images whatever the folder's size (``pipeline.data.prepare.load_prepared`` reads it)."""
    plan = _plan(root, options, jobs)
    rows = {"train": min(len(plan.train), limit) if limit else len(plan.train), "test": len(plan.test)}
    need_space(Path(out).parent, sum(rows.values()) * plan.channels * plan.size[0] * plan.size[1] + (8 << 20))
    with atomic_path(out) as tmp:
        writer = PreparedWriter(tmp)
        try:
            kept = {}
            for split in ("train", "test"):
                writer.start_split(split, rows[split], (plan.channels, *plan.size))
                kept[split] = _decode_in_order(plan, getattr(plan, split), options, jobs, writer.append,
                                               limit if split == "train" else 0, progress)
                writer.end_split(split, plan.labels(kept[split]))
            _check_rows(root, kept)
            writer.finish(plan.listing.root.name, plan.listing.classes, plan.source(kept, options, limit))
        finally:
            writer.close()


def read_images(root: Path, image_shape: tuple[int, int, int], jobs: int = -1) -> tuple[np.ndarray, list[str]]:
    """Every image file under ``root`` (any layout, sorted by path), decoded to ``image_shape`` (C, H, W):
    an unlabelled transfer set. An unreadable file is named."""
    root = Path(root)
    paths = files_under(root, _is_image_name)
    if not paths:
        raise UsageError(f"{root} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    channels, size = image_shape[0], tuple(image_shape[1:])
    if channels not in (1, 3):
        raise UsageError(f"{root}: images can be decoded to 1 or 3 channels, and the dataset's have {channels}")
    out, row = np.empty((len(paths), *image_shape), dtype=np.uint8), 0
    for block, decoded in _decoded_blocks(root, paths, channels, size, jobs):
        for path, image in zip(block, decoded):
            if isinstance(image, str):
                raise UsageError(f"{root / path}: {image}; fix or delete it")
            out[row], row = image, row + 1
    return out, paths


def changes(recorded: FolderSource, root: Path, jobs: int = -1) -> str:
    """'' if the folder's files are the ones recorded, else what changed, in a few words."""
    listing = list_folder(root)
    digests = [h.digest for h in _threads(_read_header, [listing.root / p for p in listing.paths], jobs)]
    now = dict(zip(listing.paths, digests))
    before = {p: bytes(d) for p, d in zip(recorded.paths, recorded.digests)}
    if now == before and listing.classes == recorded.classes:
        return ""
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    edited = sorted(p for p in set(now) & set(before) if now[p] != before[p])
    renamed = []
    by_digest = {before[p]: p for p in removed}
    for p in list(added):
        if now[p] in by_digest:
            old = by_digest.pop(now[p])
            renamed.append(f"{old} -> {p}")
            added.remove(p), removed.remove(old)
    parts = [f"{len(found)} {what} ({found[0]}{', ...' if len(found) > 1 else ''})"
             for what, found in (("added", added), ("removed", removed), ("renamed", renamed), ("edited", edited))
             if found]
    if listing.classes != recorded.classes and not parts:
        parts.append(f"class folders now {', '.join(listing.classes)}")
    return ", ".join(parts)
