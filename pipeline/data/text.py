"""Text corpora for the sequence family: which documents there are, which split each lies in, and a
fingerprint of their bytes.

The default corpus is on every machine: the Python standard library's own ``.py`` sources of the
interpreter that runs softcache, without its test packages (about 730 files, 12 MB on CPython 3.11).
It differs between Python builds, so it is fingerprinted from its bytes, and the Python version is
recorded beside the fingerprint. A user's own text is a folder of text files, or a ``.jsonl`` file
whose lines are objects with a ``text`` field (the Hugging Face datasets convention).

A document lies wholly in one split, drawn from a seeded hash of its name (its path, or
``file.jsonl:line``): adding a file never moves another between splits, and no test document leaks
into training a piece at a time. Documents must be UTF-8 text without NUL bytes: a NUL marks the end
of a document in the byte tokenizer's stream (Python source cannot hold one), and a file that is not
text is named in one line rather than tokenized as noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.data.folder_files import files_under
from pipeline.errors import UsageError
from pipeline.names import STDLIB, is_text_dataset

__all__ = ["STDLIB", "SPLITS", "Corpus", "load_corpus", "limit_train", "split_of", "stdlib_root", "is_text_corpus"]

SPLITS = ("train", "val", "test")
FRACTIONS = (0.90, 0.05, 0.05)                  # train, val, test, by document
TABLE_SUFFIXES = (".jsonl", ".parquet", ".arrow")   # one document per line or row
_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
_MAX_DOCUMENT_BYTES = 64 << 20                  # one file larger than this is no source file


def is_text_corpus(spec: str, tokenizer: str = "") -> bool:
    """Whether a DATASET names text (``pipeline.names.is_text_dataset``, the rule Make's planner also uses)."""
    return is_text_dataset(str(spec), bool(tokenizer))


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(name: str, seed: int) -> str:
    """The split of the document called ``name``: a sha256 of the seed and the name, read as a fraction."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if u < FRACTIONS[0] else "val" if u < FRACTIONS[0] + FRACTIONS[1] else "test"


@dataclass(frozen=True)
class Corpus:
    """Documents by split (names in a fixed order), how to read each, and what they are."""

    name: str
    source: Path
    documents: dict[str, tuple[str, ...]]       # split -> document names
    fingerprint: str                             # sha256 (16 hex) of every name and its bytes, in order
    python: str                                  # the interpreter whose stdlib it is ("" for a user's text)
    split_seed: int
    sizes: dict[str, int]                        # document name -> bytes, counted while fingerprinting
    lines: tuple[bytes, ...] = ()                # a .jsonl's texts, read once

    def read(self, name: str) -> bytes:
        """One document's UTF-8 bytes."""
        if self.lines:
            return self.lines[int(name.rsplit(":", 1)[1])]
        return _read_document(self.source, name)

    def bytes_in(self, split: str) -> int:
        return sum(self.sizes[n] for n in self.documents[split])


def load_corpus(spec: str, split_seed: int = 0) -> Corpus:
    """``stdlib``, a folder of text files, or a ``.jsonl`` file with a ``text`` field per line."""
    if spec == STDLIB:
        root = stdlib_root()
        names = files_under(root, lambda name: name.endswith(".py"), skip_dirs=_SKIPPED_DIRS, links_out="skip")
        return _corpus(STDLIB, root, names, lambda n: _read_document(root, n), platform.python_version(), split_seed)
    path = Path(spec)
    if path.is_file() and path.suffix in TABLE_SUFFIXES:
        texts = tuple(_jsonl_texts(path) if path.suffix == ".jsonl" else _table_texts(path))
        return _corpus(path.stem, path, [f"{path.name}:{i}" for i in range(len(texts))],
                       lambda n: texts[int(n.rsplit(":", 1)[1])], "", split_seed, texts)
    if path.is_dir():
        names = files_under(path, skip_dirs=frozenset({"__pycache__"}))
        return _corpus(path.name, path, names, lambda n: _read_document(path, n), "", split_seed)
    raise UsageError(f"DATASET={spec} is no text corpus: give 'stdlib', a folder of text files, a .jsonl file "
                     f"with a 'text' field on every line, or a Parquet or Arrow file with a 'text' column")


def limit_train(corpus: Corpus, limit: int) -> Corpus:
    """The corpus cut down for a quick run, named ``-nN`` so it never replaces the full set: training
    documents up to ``limit`` bytes, validation and test documents up to a tenth of it each (the whole
    split where it is smaller). Each split's documents are drawn in a seeded order (a sha256 of the split
    and the name, so a subset spans the corpus rather than its first package) and those that would
    overflow are skipped; each split keeps at least one document."""
    def drawn(split: str, budget: int) -> tuple[str, ...]:
        kept, total = [], 0
        for name in sorted(corpus.documents[split], key=lambda n: hashlib.sha256(f"{split}\0{n}".encode()).digest()):
            if not kept or total + corpus.sizes[name] <= budget:
                kept.append(name)
                total += corpus.sizes[name]
        chosen = set(kept)
        return tuple(n for n in corpus.documents[split] if n in chosen)      # in the corpus's order

    budgets = {"train": limit, "val": limit // 10, "test": limit // 10}
    documents = {split: drawn(split, budget) if corpus.documents[split] else () for split, budget in budgets.items()}
    fingerprint = hashlib.sha256(f"{corpus.fingerprint} train<={limit} eval<={limit // 10}".encode()).hexdigest()[:16]
    return dataclasses.replace(corpus, documents=documents, fingerprint=fingerprint)


def _corpus(name: str, source: Path, names: list[str], read, python: str, seed: int,
            lines: tuple[bytes, ...] = ()) -> Corpus:
    if not names:
        raise UsageError(f"{source} holds no documents; give a folder of text files or a .jsonl with text in it")
    h, sizes = hashlib.sha256(), {}
    for doc in names:
        data = read(doc)
        _check_text(source, doc, data)
        h.update(doc.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
        sizes[doc] = len(data)
    documents = {split: tuple(n for n in names if split_of(n, seed) == split) for split in SPLITS}
    empty = [s for s in SPLITS if not documents[s]]      # a split with nothing in it can never be scored
    if empty:
        raise UsageError(f"{source}: its {len(names)} documents leave the {empty[0]} split empty; give more "
                         f"documents (each lies wholly in one split, about 90/5/5)")
    return Corpus(name, source, documents, h.hexdigest()[:16], python, seed, sizes, lines)


def _too_large(source: Path, name: str, size: int) -> UsageError:
    return UsageError(f"{source}: {name} holds {size:,} bytes, more than a text document of at most "
                      f"{_MAX_DOCUMENT_BYTES >> 20} MB; split it or leave it out")


def _read_document(root: Path, name: str) -> bytes:
    """A file's bytes, its size checked before it is read: a file past the limit is never read whole."""
    try:
        with open(root / name, "rb") as f:
            data = f.read(_MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{root}: {name} cannot be read ({exc.strerror}); fix its permissions or move it out "
                         f"of the corpus") from None
    if len(data) > _MAX_DOCUMENT_BYTES:
        raise _too_large(root, name, os.stat(root / name).st_size)
    return data


def _check_text(source: Path, name: str, data: bytes) -> None:
    if len(data) > _MAX_DOCUMENT_BYTES:
        raise _too_large(source, name, len(data))
    if b"\0" in data:
        raise UsageError(f"{source}: {name} holds NUL bytes, so it is binary, not text; move it out of the corpus")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source}: {name} is not UTF-8 text (byte {exc.start}); convert it to UTF-8 or move it "
                         f"out of the corpus") from None


def _table_texts(path: Path) -> list[bytes]:
    """The ``text`` column of a Parquet file or an Arrow file (IPC file or stream, as Hugging Face ``datasets``
    saves them), one document per row."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{path}: reading Parquet or Arrow needs pyarrow: pip install 'softcache[text]'") from None
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        else:
            with pa.memory_map(str(path)) as source:
                try:
                    table = pa.ipc.open_file(source).read_all()
                except pa.ArrowInvalid:
                    source.seek(0)
                    table = pa.ipc.open_stream(source).read_all()
        # A memory-mapped Arrow file's offsets are the file's word: validate every buffer (offsets within
        # bounds, UTF-8) before a value is read, or a crafted file reads past the map (a bus error).
        table.validate(full=True)
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"{path} is not a readable {path.suffix[1:]} file ({str(exc).splitlines()[0]})") from None
    if "text" not in table.column_names or not pa.types.is_string(table.schema.field("text").type) \
            and not pa.types.is_large_string(table.schema.field("text").type):
        raise UsageError(f"{path} has no 'text' column of strings (columns: {', '.join(table.column_names)})")
    column = table.column("text")
    if column.null_count:
        first = next(i for i, t in enumerate(column.is_null().to_pylist()) if t)
        raise UsageError(f"{path}: row {first + 1} has no text (null); drop it or fill it")
    texts = [t.encode("utf-8") for t in column.to_pylist()]
    for i, text in enumerate(texts):
        if len(text) > _MAX_DOCUMENT_BYTES:
            raise _too_large(path, f"row {i + 1}", len(text))
    return texts


def _jsonl_texts(path: Path) -> list[bytes]:
    texts = []
    for i, line in _lines(path):
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: line {i} is not UTF-8 (byte {exc.start}); convert the file to UTF-8") from None
        except RecursionError:
            raise UsageError(f"{path}: line {i} nests too deeply to be a record; every line must be an object "
                             f"with a 'text' field") from None
        except ValueError as exc:
            raise UsageError(f"{path}: line {i} is not JSON ({exc}); every line must be an object with a "
                             f"'text' field") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UsageError(f"{path}: line {i} has no 'text' string field")
        try:
            texts.append(record["text"].encode("utf-8"))
        except UnicodeEncodeError:     # JSON may spell a lone surrogate ("\ud800"), which no UTF-8 text holds
            raise UsageError(f"{path}: line {i}'s text holds a lone surrogate (an escaped \\ud800-\\udfff with "
                             f"no pair), which is not text; fix or drop the line") from None
    return texts


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their numbers, each read up to a bound: one line longer than a document may be
    (with room for JSON's escapes) is refused before it is read whole."""
    bound = 2 * _MAX_DOCUMENT_BYTES
    with open(path, "rb") as f:
        for number, line in enumerate(iter(lambda: f.readline(bound + 1), b""), 1):
            if len(line) > bound:
                raise UsageError(f"{path}: line {number} is longer than {bound:,} bytes, more than one document "
                                 f"may be; split it")
            if line.strip():
                yield number, line
