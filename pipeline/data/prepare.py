"""Datasets: finding them, reading IDX and .npz files and image folders, and fingerprinting their content.

The data stage turns whatever the user has (IDX files, gzip or raw; an ``.npz``; a folder of
PNG or JPEG files, see :mod:`pipeline.data.image_folder`) into one
prepared ``.npz`` under ``data/dataset/``, which every later stage reads. Images are kept
as uint8 (N, C, H, W) so the whole training split stays small in memory; models scale
them to [0, 1] themselves. The fingerprint is a digest of the arrays, not of the files,
so the same images from the Debian package or a download give the same fingerprint.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import os
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from pipeline.data.dataset import Dataset, fingerprint_of
from pipeline.data.image_folder import (
    FolderOptions,
    FolderSource,
    changes,
    is_image_folder,
    prepare_folder,
    read_folder,
)
from pipeline.data.image_store import read_prepared_h5, source_arrays_h5, write_prepared_h5
from pipeline.data.text import limit_train as limit_text
from pipeline.data.text import load_corpus
from pipeline.data.tokenizers import load_tokenizer
from pipeline.data.windows import PREPARED_TEXT, prepare_text, read_text_attrs
from pipeline.errors import UsageError
from pipeline.files import atomic_path

__all__ = [
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "KNOWN_DATASETS",
    "DEBIAN_DIR",
    "read_idx",
    "image_layout",
    "LAYOUTS",
    "write_idx",
    "load_idx_dir",
    "load_npz",
    "find_source",
    "limit_train",
    "holdout_split",
    "as_nchw",
    "download_verified",
    "load_dataset",
    "save_prepared",
    "load_prepared",
    "prepared_folder_is_current",
    "fingerprint_of",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# Official files and their published MD5s (github.com/zalandoresearch/fashion-mnist).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
KNOWN_DATASETS = ("fashion-mnist",)
_IDX_PARTS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --- file formats ---------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, told apart by the gzip magic bytes). The header is read
    first, and no more than it declares is ever inflated: a small .gz can inflate to terabytes."""
    path = Path(path)
    with open(path, "rb") as raw_file:
        gzipped = raw_file.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise UsageError(f"{path}: not an IDX file (bad magic number)")
            dims_raw = f.read(4 * head[3])
            dims = tuple(int.from_bytes(dims_raw[4 * i: 4 * i + 4], "big") for i in range(len(dims_raw) // 4))
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            expected = math.prod(dims) * dtype.itemsize
            if len(dims) != head[3] or expected > _memory_bytes():
                raise UsageError(f"{path}: IDX header declares {dims} values of {dtype}, which this machine's "
                                 f"memory cannot hold (or the header is cut short); fetch it again")
            data = f.read(expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"{path}: damaged gzip file ({exc}); fetch it again") from None
    if len(data) != expected:
        held = f"{len(data)} bytes" if len(data) < expected else "more bytes"
        raise UsageError(f"{path}: IDX header says {dims} but the file holds {held} of data instead of "
                         f"{expected}; fetch it again")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write uint8 data as IDX (gzip when the name ends in .gz); used for fixtures."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)


LAYOUTS = ("auto", "nchw", "nhwc")
_CHANNELS = (1, 3, 4)     # grey, RGB, RGBA: what a channel axis holds


def image_layout(shape: tuple, layout: str = "auto") -> str:
    """'nchw' or 'nhwc' for 4-D images. ``auto`` decides only when it is unambiguous: the channel
    axis is the one of the two candidates (second or last) that holds 1, 3 or 4 entries and the
    other does not; otherwise the user says which (LAYOUT=nchw|nhwc)."""
    if layout != "auto":
        return layout
    first, last = shape[1] in _CHANNELS, shape[3] in _CHANNELS
    if first != last:
        return "nchw" if first else "nhwc"
    raise UsageError(f"images of shape {tuple(shape)} could be channel-first or channel-last; "
                     f"say which with LAYOUT=nchw (N, C, H, W) or LAYOUT=nhwc (N, H, W, C)")


def as_nchw(x: np.ndarray, where: str, layout: str = "auto") -> np.ndarray:
    if x.ndim == 3:            # (N, H, W): one channel, nothing to decide
        x = x[:, None]
    elif x.ndim != 4:
        raise UsageError(f"{where}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C), got shape {x.shape}")
    else:
        try:
            if image_layout(x.shape, layout) == "nhwc":
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise UsageError(f"{where}: images must be uint8 or float, got {x.dtype}")
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        if len(bad):    # NaN would also silently switch off the [0, 1] -> [0, 255] scaling below
            raise UsageError(f"{where}: {len(bad)} images hold NaN or Inf (the first is image {bad[0]}); "
                             f"fix or drop them")
        # Float images are [0, 1] or [0, 255]; clipping anything else would hide a broken file.
        top = 1.0 if x.max() <= 1.0 else 255.0
        bad = np.flatnonzero(((x < 0) | (x > top)).reshape(len(x), -1).any(axis=1))
        if len(bad):
            row = x[bad[0]]
            raise UsageError(f"{where}: {len(bad)} images hold values outside [0, {top:g}] (the first is image "
                             f"{bad[0]}, with values in {row.min():g}..{row.max():g}); float images must lie in "
                             f"[0, 1] or [0, 255]")
        x = np.rint(x * 255.0 if top == 1.0 else x).astype(np.uint8)
    return x


def load_idx_dir(directory: Path, name: str = "fashion-mnist") -> Dataset:
    """Read the four Fashion-MNIST-named IDX files from a directory (.gz or raw)."""
    directory = Path(directory)
    arrays = {}
    for key, stem in _IDX_PARTS.items():
        candidates = [directory / f"{stem}.gz", directory / stem]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise UsageError(f"{directory}: missing {stem}[.gz]")
        arrays[key] = read_idx(found)
    return Dataset(
        name=name,
        x_train=as_nchw(arrays["x_train"], str(directory)),
        y_train=arrays["y_train"].astype(np.int64),
        x_test=as_nchw(arrays["x_test"], str(directory)),
        y_test=arrays["y_test"].astype(np.int64),
        class_names=FASHION_MNIST_CLASSES if name == "fashion-mnist"
        else tuple(str(i) for i in range(int(arrays["y_train"].max()) + 1)),
    )


def _memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _npz_size_problem(path: Path) -> str | None:
    """What an .npz's arrays declare before one is inflated: a few kilobytes of deflated zeros can declare
    a terabyte, and numpy allocates what the header says. Each member's header is read (not its data),
    and the file is refused when a member holds fewer bytes than its header declares, or when the arrays
    together would not fit in this machine's memory."""
    total = 0
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                declared = math.prod(shape) * dtype.itemsize
                if info.file_size < member.tell() + declared:
                    return f"array {info.filename[:-4]} declares {shape} {dtype}, more than the file holds"
            total += declared
    if total > _memory_bytes():
        return f"its arrays take {total / 2**30:,.1f} GiB once inflated, more than this machine's memory"
    return None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, never unpickled, refused in one line if it would not fit (see above)."""
    try:
        problem = _npz_size_problem(path)
        if problem is None:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, MemoryError, EOFError) as exc:
        problem = f"not a readable .npz file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    raise UsageError(f"{path}: {problem}")


def load_npz(path: Path, layout: str = "auto") -> Dataset:
    """Read a user's .npz with x_train, y_train, x_test, y_test (and optional class_names);
    images (N, H, W), (N, C, H, W) or (N, H, W, C) (``layout``, see :func:`image_layout`)."""
    path = Path(path)
    arrays = read_npz(path)
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise UsageError(f"{path}: missing arrays {missing}; an .npz dataset needs x_train, y_train, x_test, y_test")
    for k in ("y_train", "y_test"):
        if not np.issubdtype(arrays[k].dtype, np.integer):
            raise UsageError(f"{path}: {k} must hold integer labels, got {arrays[k].dtype}")
    if "class_names" in arrays:
        names = tuple(str(n) for n in arrays["class_names"])
    else:   # the classes are the labels, so they must fill 0..C-1: one stray label is no new class
        present = np.union1d(arrays["y_train"], arrays["y_test"])
        num_classes = int(present.max()) + 1 if len(present) else 0
        if len(present) != num_classes:
            raise UsageError(f"{path}: labels hold {len(present)} values in 0..{num_classes - 1}, so "
                             f"{num_classes - len(present)} classes have no image; fix the stray labels, or give "
                             f"class_names to say how many classes there are")
        names = tuple(str(i) for i in range(num_classes))
    return Dataset(
        name=path.stem,
        x_train=as_nchw(arrays["x_train"], f"{path} x_train", layout),
        y_train=arrays["y_train"].astype(np.int64),
        x_test=as_nchw(arrays["x_test"], f"{path} x_test", layout),
        y_test=arrays["y_test"].astype(np.int64),
        class_names=names,
    )


# --- finding the data ------------------------------------------------------------------

def _has_idx(directory: Path) -> bool:
    return all((directory / f"{s}.gz").is_file() or (directory / s).is_file() for s in _IDX_PARTS.values())


def download_verified(base_url: str, files: dict[str, str], dest: Path) -> None:
    """Fetch each file to ``dest`` and check its MD5; a mismatch leaves nothing behind."""
    dest.mkdir(parents=True, exist_ok=True)
    for fname, md5 in files.items():
        target = dest / fname
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == md5:
            continue
        try:
            with urllib.request.urlopen(base_url + fname, timeout=60) as resp:
                payload = resp.read()
        except OSError as exc:
            raise UsageError(f"could not download {base_url + fname} ({exc}); install the Debian "
                             "package dataset-fashion-mnist or put the IDX files in data/raw/") from None
        got = hashlib.md5(payload).hexdigest()
        if got != md5:
            raise UsageError(f"{fname}: checksum mismatch (md5 {got}, expected {md5}); "
                             "the download is damaged, run the data stage again")
        with atomic_path(target) as tmp:
            tmp.write_bytes(payload)


def find_source(name: str, source: Path | None, raw_dir: Path, debian_dir: Path = DEBIAN_DIR,
                download: bool = True) -> Path:
    """Where to read ``name`` from: explicit source, data/raw/, the Debian package, a download."""
    if source is not None:
        if not Path(source).exists():
            raise UsageError(f"--source {source} does not exist")
        return Path(source)
    if _has_idx(raw_dir):
        return raw_dir
    if name == "fashion-mnist" and _has_idx(debian_dir):
        return debian_dir
    if name == "fashion-mnist" and download:
        download_verified(FASHION_MNIST_URL, FASHION_MNIST_MD5, raw_dir)
        return raw_dir
    raise UsageError(
        f"no {name} data found in {raw_dir} or {debian_dir}; install it with "
        "'apt-get install dataset-fashion-mnist', or put the four IDX files in data/raw/"
    )


def load_dataset(spec: str, source: Path | None, raw_dir: Path, debian_dir: Path = DEBIAN_DIR,
                 download: bool = True, layout: str = "auto", folder: FolderOptions = FolderOptions()) -> Dataset:
    """``spec`` is a known dataset name, a path to an .npz, an image folder (``train/<class>/*``,
    read with ``folder``'s options) or a directory of IDX files."""
    path = Path(spec)
    if spec.endswith(".npz"):
        if not path.is_file():
            raise UsageError(f"dataset file {spec} does not exist")
        return load_npz(path, layout)
    if path.is_dir() and is_image_folder(path):
        return read_folder(path, folder)
    if path.is_dir():
        return load_idx_dir(path, name=path.name)
    if spec not in KNOWN_DATASETS:
        raise UsageError(f"unknown dataset '{spec}'; use one of {', '.join(KNOWN_DATASETS)}, "
                         "a path to an .npz file, or a directory of IDX files")
    found = find_source(spec, source, raw_dir, debian_dir, download)
    if found.suffix == ".npz":
        return load_npz(found, layout)
    return load_idx_dir(found, name=spec)


def limit_train(d: Dataset, limit: int) -> Dataset:
    """Keep the first ``limit`` training samples (0 keeps all); the test split is untouched."""
    if limit <= 0 or limit >= len(d.y_train):
        return d
    source = d.source and dataclasses.replace(d.source, rows_train=d.source.rows_train[:limit], limit=limit)
    return Dataset(d.name, d.x_train[:limit], d.y_train[:limit], d.x_test, d.y_test, d.class_names, source=source)


def holdout_split(n: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of a training split of n rows, sorted.

    The held-out rows are chosen by a fixed seed, not the run's: every run with the same
    HOLDOUT is scored on the same images, so T/ALPHA/epochs are chosen on one validation
    set, and the test split is left for the one final report.
    """
    if not 0 <= holdout < n:
        raise UsageError(f"HOLDOUT={holdout} must lie in [0, {n}) for a training split of {n} images")
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(20151109).permutation(n)[:holdout]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


# --- the prepared file ---------------------------------------------------------------

def save_prepared(d: Dataset, path: Path) -> None:
    """An .npz (read whole by every stage) or, for a path ending in .h5, an HDF5 file whose images
    every stage reads a batch at a time (:mod:`pipeline.data.image_store`)."""
    if Path(path).suffix == ".h5":
        return write_prepared_h5(d, path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test,
                     class_names=np.array(d.class_names), name=np.array(d.name),
                     fingerprint=np.array(d.fingerprint), **(d.source.arrays() if d.source else {}))


def _recorded_source(out: Path):
    """The folder record a prepared file keeps (None for one not made from a folder)."""
    if Path(out).suffix == ".h5":
        arrays = source_arrays_h5(out)
    else:
        with np.load(out, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k.startswith("source")} or None
    return None if arrays is None else FolderSource.from_arrays(arrays)


def prepared_folder_is_current(out: Path, folder: Path, options: FolderOptions, limit: int = 0) -> bool:
    """Whether ``out`` was prepared from ``folder`` with these options and the folder still holds
    exactly the files it did then. False when ``out`` is missing or was made otherwise (another
    folder, other options): it is then prepared anew. A UsageError, naming what changed, when only
    the files changed: the prepared file, and the teacher's cache made from it, are kept until the
    user deletes them, because relabelling a large folder costs a whole teacher pass."""
    try:
        recorded = _recorded_source(out)
    except (OSError, ValueError, KeyError):
        return False
    if recorded is None:
        return False
    if (recorded.folder, recorded.options, recorded.limit) != (str(Path(folder).resolve()), options, limit):
        return False
    changed = changes(recorded, folder)
    if changed:
        raise UsageError(f"{folder} changed since {out} was prepared from it: {changed}; to use the folder as it is "
                         f"now, delete {out} (the teacher's cache made from it is then made anew)", fix="data",
                         fix_settings={"DATASET": folder, **options.settings()})
    return True


def load_prepared(path: Path, verify: bool = True) -> Dataset:
    """Read a prepared dataset; its stored fingerprint must match its content (for .h5, ``verify=False``
    takes the recorded one: what a writer that has just computed it may do)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"prepared dataset {path} is missing", fix="data")
    if path.suffix == ".h5":
        try:
            p = read_prepared_h5(path)
            d = Dataset(p.name, p.x_train, p.y_train, p.x_test, p.y_test, p.class_names,
                        fingerprint="" if verify else p.fingerprint,   # "": recomputed from every row
                        source=FolderSource.from_arrays(p.source) if p.source else None)
        except (OSError, ValueError, KeyError) as exc:
            if PREPARED_TEXT in str(exc):       # prepared text, given where images are read
                raise UsageError(f"{path} is prepared text, which image stages do not read; for text use lm-student "
                                 f"(make student DATASET=<the text>)") from None
            raise UsageError(f"{path} is not a prepared softcache dataset ({exc})", fix="data") from None
        if d.fingerprint != p.fingerprint:
            raise UsageError(f"{path} content does not match its recorded fingerprint", fix="data")
        return d
    try:
        a = read_npz(path)
        d = Dataset(str(a["name"]), a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                    tuple(str(n) for n in a["class_names"]),
                    source=FolderSource.from_arrays(a) if "source" in a else None)
    except UsageError as exc:
        raise UsageError(exc.message, fix="data") from None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{path} is not a prepared softcache dataset ({exc})", fix="data") from None
    if d.fingerprint != str(a["fingerprint"]):
        raise UsageError(f"{path} content does not match its recorded fingerprint", fix="data")
    return d


def prepare_corpus(cfg) -> dict:
    """The ``data`` stage for text (``cfg.tokenizer`` or a text DATASET): the corpus tokenized into the
    prepared text file ``cfg.out``; its attributes (splits' token counts, fingerprints)."""
    whole, spec = load_corpus(cfg.dataset, cfg.split_seed), cfg.tokenizer or "bytes"
    corpus = limit_text(whole, cfg.limit) if cfg.limit else whole
    current = _current_text(cfg.out, corpus, spec)
    if current is not None:
        return {**current, "unchanged": True}
    # bpe-N learns from the whole corpus's train split, a LIMIT subset too: a quick run reads the same ids as
    # the whole (and as a teacher trained, or published, on the whole)
    return prepare_text(corpus, load_tokenizer(spec, whole), cfg.out)


def _current_text(out: Path, corpus, spec: str) -> dict | None:
    """The attributes of an existing prepared text file that this corpus and tokenizer would write again, else
    None: left as it is, it keeps its time, so Make rebuilds no teacher on it (a BPE is not trained again)."""
    if not out.is_file():
        return None
    try:
        attrs = read_text_attrs(out)
    except UsageError:
        return None
    same = attrs["corpus_fingerprint"] == corpus.fingerprint and int(attrs["split_seed"]) == corpus.split_seed
    if spec.endswith(".json"):        # a local tokenizer: quick to load, compared by its fingerprint
        return attrs if same and attrs["tokenizer_fingerprint"] == load_tokenizer(spec, corpus).fingerprint else None
    return attrs if same and attrs["tokenizer"] == spec else None


def prepare(cfg) -> Dataset | None:
    """The ``data`` stage (``cfg``: a :class:`pipeline.config.DataConfig`): write the prepared file
    ``cfg.out``, or return None when it is an image folder's and still matches the folder (every file's
    digest checked). A folder prepared to ``.h5`` is decoded
    straight to disk; anything else is read into memory and saved as ``.npz``."""
    folder = Path(cfg.dataset)
    is_folder = folder.is_dir() and is_image_folder(folder)
    if is_folder and cfg.out.is_file() and prepared_folder_is_current(cfg.out, folder, cfg.folder_options(),
                                                                      cfg.limit):
        return None
    if is_folder and cfg.out.suffix == ".h5":
        prepare_folder(folder, cfg.out, cfg.folder_options(), cfg.limit)
        return load_prepared(cfg.out, verify=False)   # the writer has just read every row back for its fingerprint
    found = load_dataset(cfg.dataset, cfg.source, cfg.raw_dir, cfg.system_dir, cfg.download, cfg.layout,
                         cfg.folder_options())
    dataset = limit_train(found, cfg.limit)
    save_prepared(dataset, cfg.out)
    return dataset

