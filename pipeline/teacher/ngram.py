"""A count-based baseline for byte-level teachers: an interpolated Witten-Bell n-gram model.

A Transformer teacher is worth caching only if it beats what counting does: an order-5 byte n-gram fits
the stdlib corpus in seconds and predicts held-out files at about 1.8 bits per byte, where a 0.4M-parameter
student trained from scratch ends up after a few CPU minutes. This model is the yardstick the default LM
teacher is measured against (docs/RESULTS.md), not a teacher softcache caches.

Witten-Bell interpolation, from the empty context up (order 0 over a uniform prior):

    P(w | h) = (c(h, w) + N1+(h) · P(w | h')) / (c(h) + N1+(h))      (P(w | h') alone where c(h) = 0)

with h' the context h less its oldest token, c counts in the training split, N1+(h) the number of
distinct tokens seen after h. Counts are sorted int64 keys (np.unique), looked up with searchsorted.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np

__all__ = ["NGramModel"]


def _keys(tokens: np.ndarray, length: int, vocab: int) -> np.ndarray:
    """For every position i, the ``length`` tokens before it as one integer (tokens before the start: 0)."""
    padded = np.concatenate([np.zeros(length, np.int64), tokens.astype(np.int64)])
    key = np.zeros(len(tokens), np.int64)
    for back in range(length, 0, -1):
        key = key * vocab + padded[length - back: length - back + len(tokens)]
    return key


class NGramModel:
    """Counts of every context of up to ``order - 1`` tokens, and their followers, in a token stream."""

    def __init__(self, tokens: np.ndarray, order: int, vocab_size: int):
        if vocab_size ** (order - 1) * vocab_size >= 2 ** 63:
            raise ValueError(f"an order-{order} model over {vocab_size} tokens does not fit int64 keys")
        self.order, self.vocab = order, vocab_size
        self.tables = []
        for length in range(order):
            full = _keys(tokens, length, vocab_size) * vocab_size + tokens.astype(np.int64)
            pairs, pair_counts = np.unique(full, return_counts=True)
            contexts, first, followers = np.unique(pairs // vocab_size, return_index=True, return_counts=True)
            self.tables.append((pairs, pair_counts, contexts, np.add.reduceat(pair_counts, first), followers))

    def probabilities(self, tokens: np.ndarray) -> np.ndarray:
        """P(token_i | the tokens before it) for every position of a stream."""
        p = np.full(len(tokens), 1.0 / self.vocab)
        for length, (pairs, pair_counts, contexts, context_counts, followers) in enumerate(self.tables):
            context = _keys(tokens, length, self.vocab)
            c_hw = _lookup(pairs, pair_counts, context * self.vocab + tokens.astype(np.int64))
            c_h, n1 = _lookup(contexts, context_counts, context), _lookup(contexts, followers, context)
            seen = c_h > 0
            p = np.where(seen, (c_hw + n1 * p) / np.maximum(c_h + n1, 1), p)
        return p

    @classmethod
    def from_text(cls, path: Path, order: int = 5) -> "NGramModel":
        with h5py.File(path, "r") as f:
            return cls(f["train/tokens"][:], order, int(f.attrs["vocab_size"]))

    def bits_per_token(self, path: Path, split: str) -> float:
        """Mean bits per token of a prepared text file's split (bits per byte for the bytes tokenizer)."""
        with h5py.File(path, "r") as f:
            tokens = f[f"{split}/tokens"][:]
        return float(-np.log(self.probabilities(tokens)).sum() / math.log(2) / len(tokens))


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[k] where keys[k] == query, else 0 (``keys`` sorted)."""
    at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[at] == queries, values[at], 0)
