"""Tokenizers for text corpora, each with a fingerprint that every artifact made through it records.

- ``bytes`` (the default): a document's UTF-8 bytes are its tokens, vocabulary 256, no dependency.
- ``bpe-N``: a byte-level BPE of N tokens trained here on the corpus's train split (through the
  ``tokenizers`` library, the ``text`` extra), so large vocabularies are exercised on real data.
- a path to a local Hugging Face ``tokenizer.json``: the user's teacher's own tokenizer.

Every tokenizer has a ``separator`` id written after each document in a split's token stream: NUL for
bytes (no text document holds one; :mod:`pipeline.data.text` refuses those that do), and an
``<|endoftext|>`` token for BPE (for a user's tokenizer: its end-of-text token, which it must have).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.digests import definition_fingerprint
from pipeline.errors import UsageError
from pipeline.settings import BPE_TOKENS

__all__ = ["Tokenizer", "load_tokenizer", "train_bpe", "token_dtype", "definition_fingerprint", "END_OF_TEXT"]

END_OF_TEXT = "<|endoftext|>"
_BPE_RE = re.compile(r"bpe-([0-9]+)")
_EOS_NAMES = (END_OF_TEXT, "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id below ``vocab_size``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise UsageError(f"a vocabulary of {vocab_size:,} tokens is larger than any tokenizer softcache reads (2^32)")


@dataclass(frozen=True)
class Tokenizer:
    """``name`` (bytes, bpe-N, or a tokenizer.json path), ``vocab_size``, the ``separator`` id, a
    ``fingerprint`` (16 hex digits of sha256 over its definition), and ``encode``."""

    name: str
    vocab_size: int
    separator: int
    fingerprint: str
    definition: str = ""          # tokenizer.json text; "" for bytes

    def byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each id stands for (the separator counts 1, as a newline would): what turns bits per
        token into bits per byte, the one figure comparable across tokenizers."""
        if not self.definition:
            return np.ones(256, np.int64)
        backend = _backend(self.definition)
        lengths = np.array([len(_guarded(backend.decode, "decode", [i], skip_special_tokens=False).encode(
                            "utf-8", errors="surrogatepass")) for i in range(self.vocab_size)], np.int64)
        lengths[self.separator] = 1
        return np.maximum(lengths, 1)

    def encode(self, data: bytes) -> np.ndarray:
        """A document's token ids, in :func:`token_dtype`."""
        if not self.definition:
            return np.frombuffer(data, dtype=np.uint8)
        ids = _guarded(_backend(self.definition).encode, "encode", data.decode("utf-8"), add_special_tokens=False).ids
        return np.asarray(ids, dtype=token_dtype(self.vocab_size))

    def decode(self, ids) -> str:
        """Text for token ids (what a student writes); bytes that are no UTF-8 show as U+FFFD."""
        ids = [int(i) for i in ids]
        if not self.definition:
            return bytes(ids).decode("utf-8", errors="replace")
        return _guarded(_backend(self.definition).decode, "decode", ids, skip_special_tokens=False)


BYTES = Tokenizer("bytes", 256, 0, hashlib.sha256(b"softcache bytes tokenizer").hexdigest()[:16])


def load_tokenizer(spec: str, corpus=None) -> Tokenizer:
    """``bytes``, ``bpe-N`` (trained on ``corpus``'s train split), or a local ``tokenizer.json``."""
    if spec == "bytes":
        return BYTES
    match = _BPE_RE.fullmatch(spec)
    if match:
        if corpus is None:
            raise UsageError(f"TOKENIZER={spec} is trained on the corpus; it needs one")
        return train_bpe(corpus, int(match.group(1)))
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UsageError(f"TOKENIZER={spec} is unknown: give bytes, bpe-N (e.g. bpe-8192, trained here) or a local "
                         f"tokenizer.json (or the folder holding one)")
    try:
        definition = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"{path} is not a readable UTF-8 tokenizer.json ({str(exc)[:80]})") from None
    backend = _backend(definition, path)
    eos = next((backend.token_to_id(t) for t in _EOS_NAMES if backend.token_to_id(t) is not None), None)
    if eos is None:
        raise UsageError(f"{path} has no end-of-text token ({', '.join(_EOS_NAMES)}), which marks where one "
                         f"document ends and the next begins; add one")
    return Tokenizer(str(path), backend.get_vocab_size(with_added_tokens=True), eos, definition_fingerprint(definition),
                     definition)


def train_bpe(corpus, vocab_size: int) -> Tokenizer:
    """A byte-level BPE of ``vocab_size`` tokens (``<|endoftext|>`` among them) on the train split."""
    low, high = BPE_TOKENS
    if not low <= vocab_size <= high:
        raise UsageError(f"TOKENIZER=bpe-{vocab_size}: a byte-level BPE needs {low} to {high} tokens")
    tokenizers = _library()
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    _guarded(bpe.train_from_iterator, "train", (corpus.read(n).decode("utf-8") for n in corpus.documents["train"]),
             trainer)
    definition = bpe.to_str()
    return Tokenizer(f"bpe-{vocab_size}", bpe.get_vocab_size(with_added_tokens=True), bpe.token_to_id(END_OF_TEXT),
                     definition_fingerprint(definition), definition)




def _library():
    try:
        import tokenizers
    except ImportError:
        raise UsageError("BPE and Hugging Face tokenizers need the tokenizers library: "
                         "pip install 'softcache[text]' (TOKENIZER=bytes needs nothing)") from None
    return tokenizers


_BACKENDS: dict[str, object] = {}


@contextlib.contextmanager
def _rust_quiet():
    """File descriptor 2 shut for the length of a call: Rust's panic hook writes its message (and, with
    RUST_BACKTRACE set, a backtrace) straight to it before Python sees the panic."""
    sys.stderr.flush()
    saved, sink = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(sink)


def _guarded(call, what: str, *args, **kwargs):
    """A call into the tokenizers library, whose Rust code may panic on a hostile definition (a regex that
    backtracks past Oniguruma's retry limit, an id it has no token for): a panic surfaces as
    ``PanicException``, which is a ``BaseException``, not an ``Exception``. Either becomes one line naming
    the tokenizer, and the panic's own message on stderr is kept out of it."""
    try:
        with _rust_quiet():
            return call(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise UsageError(f"the tokenizer failed to {what} ({type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0][:120]}); check its tokenizer.json") from None


def _backend(definition: str, path: Path | None = None):
    """The ``tokenizers.Tokenizer`` of a definition, built once per process."""
    key = definition_fingerprint(definition)
    if key not in _BACKENDS:
        try:
            _BACKENDS[key] = _guarded(_library().Tokenizer.from_str, "load", definition)
        except UsageError as exc:     # the library raises its own exception type for a malformed file
            raise UsageError(f"{path or 'the tokenizer'} is not a tokenizer.json the tokenizers library reads "
                             f"({str(exc)[:160]})") from None
    return _BACKENDS[key]
