"""The per-token cache in a user's own training loop: a ``torch.utils.data.Dataset`` of windows with the
teacher's targets at a grid temperature, checked against the prepared text first (the same text
fingerprint), so a loader never hands a window another window's targets.

Each item is ``(tokens, ids, log_probs, log_tail)``: the window's L + 1 token ids (the model reads the
first L, each predicts the next), the teacher's top-k ids (L, k), their log-probabilities at T (L, k) and
the log of the tail's mass at T (L,). For a dense cache ``ids`` are all V ids in order and the tail is
empty (log mass -inf). It works
with ``DataLoader(num_workers > 0)``: the cache and the text are opened by each worker.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset as TorchDataset

from pipeline.cache.lm_format import grid_index
from pipeline.cache.lm_reader import TokenCache
from pipeline.data.windows import TokenWindows, read_text_attrs
from pipeline.errors import UsageError
from pipeline.settings import check

__all__ = ["TokenTargetDataset"]


class TokenTargetDataset(TorchDataset):
    """Windows of ``split`` with the teacher's targets at temperature ``T`` (a temperature of the cache's
    grid, or any for a dense cache)."""

    def __init__(self, cache: str | Path, text: str | Path, T: float, split: str = "train"):
        check("T", T)          # the setting's one check: a number in its range (T = 0 would divide by zero)
        text_attrs = read_text_attrs(Path(text))
        self.cache = TokenCache(cache, {"text_fingerprint": text_attrs["fingerprint"]})
        self.windows = TokenWindows(text, split, int(self.cache.attrs["context"]), int(self.cache.attrs["stride"]))
        if len(self.windows) != self.cache.windows(split):
            raise UsageError(f"the text holds {len(self.windows)} {split} windows but the cache {cache} holds "
                             f"{self.cache.windows(split)}; rebuild the cache", fix="token-logits")
        self.split, self.T = split, float(T)
        if self.cache.attrs["topk"]:
            grid_index(self.cache.temperatures, self.T)     # a T off the grid: refused now, not in a worker

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        ids, log_probs, log_tail = self.cache.targets(self.split, [i], self.T)
        if ids is None:                                   # dense: the support is the whole vocabulary
            ids = torch.arange(log_probs.shape[-1]).expand_as(log_probs)
        return self.windows.batch([i])[0], ids[0], log_probs[0], log_tail[0]
