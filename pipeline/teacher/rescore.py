"""Re-scoring a seeded sample of a cache's rows with its teacher (``softcache verify --teacher``).

The digests a cache carries (``pipeline.cache.format.ContentDigest``) prove its values are the
ones written; they cannot prove those values are the teacher's. Running the teacher again on a
sample of rows, with the very views it scored, and comparing its logits with the cached ones,
does (TinyViT checks its saved logits the same way).

A GPU pass runs in bfloat16 autocast and a float16 cache rounds its values, so the comparison
allows for both: a row matches when every compared logit lies within ``tolerance`` of the cached
value, scaled by the row's largest logit. A top-k cache is compared on its k stored classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch

from pipeline.cache.describe import is_token_cache
from pipeline.cache.ensemble import check_recorded_accuracy
from pipeline.cache.format import VIEW_SPLIT
from pipeline.cache.lm_format import token_targets
from pipeline.cache.lm_reader import TokenCache
from pipeline.cache.reader import CacheExpectations, LogitCache
from pipeline.cache.rows import cached_split_rows
from pipeline.data.prepare import Dataset, load_prepared
from pipeline.data.windows import TokenWindows, read_text_attrs
from pipeline.errors import UsageError
from pipeline.provenance import other_code
from pipeline.teacher.hf_source import load_lm_teacher
from pipeline.teacher.source import TeacherSource, load_teacher
from pipeline.training.loop import predict

__all__ = ["RowCheck", "rescore_sample", "tolerance_for", "verify_cache"]


@dataclass(frozen=True)
class RowCheck:
    """One split's sample: how many rows were re-scored, how many differ, and the largest difference."""

    split: str
    rows: int
    mismatched: int
    first_mismatch: int | None
    max_difference: float


def tolerance_for(cache: LogitCache) -> float:
    """Relative tolerance: bfloat16 autocast on a GPU keeps about 3 significant digits, float16 storage
    about 3 as well; a float32 pass on the CPU is exact up to summation order."""
    gpu = str(cache.attrs.get("device", "cpu")).startswith("cuda")
    half = cache.attrs.get("dtype", "float32") == "float16"
    return 3e-2 if gpu else 2e-3 if half else 1e-4


def rescore_sample(cache: LogitCache, teacher: TeacherSource, data: Dataset, sample: int = 256,
                   seed: int = 0) -> list[RowCheck]:
    """Re-score up to ``sample`` rows of every split (drawn from ``seed``) and compare them with the cache.
    Transfer-set rows are not re-scored (their images are not in the dataset)."""
    if cache.members:
        raise UsageError(f"cache {cache.path} is an ensemble of {cache.members} teachers; re-score each "
                         f"member's cache with its own teacher")
    rng = np.random.default_rng(seed)
    tol = tolerance_for(cache)
    stored_classes = cache.attrs.get("topk", 0)
    checks = []
    for split in cache.splits:
        per_image = cache.views if split == VIEW_SPLIT else 1
        images = len(data.y_test) if split == "test" else len(data.y_train)   # dataset rows, no transfer rows
        n = images * per_image
        rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
        cached = torch.from_numpy(cache.stored_logits(split, rows))
        with torch.no_grad():
            fresh = predict(teacher.model, cached_split_rows(cache, data, split).images_at(rows)) / cache.temperature
        compared = torch.ones_like(cached, dtype=torch.bool)
        if stored_classes:              # the tail value stands for the other classes, as a whole
            compared = torch.zeros_like(compared).scatter_(1, cached.topk(stored_classes, dim=1).indices, True)
        scale = cached.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
        difference = ((fresh - cached).abs() / scale).where(compared, torch.zeros_like(cached)).amax(dim=1)
        bad = torch.nonzero(difference > tol).flatten()
        checks.append(RowCheck(split, len(rows), len(bad), int(rows[bad[0]]) if len(bad) else None,
                               float(difference.max()) if len(rows) else 0.0))
    return checks


def verify_cache(cache: Path, *, dataset: Path | None = None, teacher: str | None = None,
                 teacher_weights: Path | None = None, sample: int = 256, seed: int = 0,
                 trust_undigested: bool = False) -> Iterator[str]:
    """``softcache verify``: every reader check, the teacher's recorded accuracy recomputed from the cached
    logits, the dataset's fingerprint (with ``dataset``), and (with ``teacher``) a seeded sample re-scored.
    Yields the report's lines as each check passes, and raises a one-line UsageError naming what failed."""
    if teacher is not None and dataset is None:
        raise UsageError("--teacher re-scores the dataset's images: give --dataset too")
    if is_token_cache(cache):
        yield from _verify_tokens(cache, dataset, teacher, sample, seed)
        return
    expect, data = CacheExpectations(), None
    if dataset is not None:
        data = load_prepared(dataset)
        expect = CacheExpectations(dataset_fingerprint=data.fingerprint, num_classes=data.num_classes,
                                   train_rows=len(data.y_train))
    c = LogitCache(cache, expect, trust_undigested=trust_undigested)
    recorded, _ = check_recorded_accuracy(c)
    digests = ("every dataset and attribute matches the digest written with it" if c.digests_checked
               else "no digests recorded, accepted as asked (--trust-undigested-cache): checksums only")
    yield (f"{cache}: OK ({c.train_rows} train rows, {c.num_classes} classes, teacher {100 * recorded:.2f}% "
           f"on the test set as recorded, fingerprint {c.fingerprint}; {digests}; made by "
           f"{other_code(c.attrs) or 'this code'})")
    if teacher is None:
        return
    checks = rescore_sample(c, load_teacher(teacher, teacher_weights), data, sample=sample, seed=seed)
    for check in checks:
        yield (f"  re-scored {check.rows} {check.split} rows: largest difference {check.max_difference:.2e} of "
               f"the row's scale (tolerance {tolerance_for(c):g}), {check.mismatched} differ")
    bad = next((check for check in checks if check.mismatched), None)
    if bad is not None:
        raise UsageError(f"cache {cache}: {bad.mismatched} of {bad.rows} re-scored {bad.split} rows (the first is "
                         f"row {bad.first_mismatch}) are not {teacher}'s logits: the cache was edited or made by "
                         f"another teacher", fix="teacher-logits")


def _verify_tokens(cache: Path, text: Path | None, teacher: str | None, sample: int, seed: int) -> Iterator[str]:
    """A per-token cache: every reader check, the prepared text's fingerprint (with ``text``), and (with an
    LM ``teacher`` checkpoint) a seeded sample of windows re-scored: the same top-k ids, and logits and tail
    odds within the storage dtype's rounding (bf16 on a GPU widens it)."""
    expect = {"text_fingerprint": read_text_attrs(text)["fingerprint"]} if text is not None else {}
    c = TokenCache(cache, expect)
    grid = c.temperatures
    yield (f"{cache}: OK ({c.windows('train')} train, {c.windows('val')} val, {c.windows('test')} test windows of "
           f"{c.attrs['context']} tokens, V = {c.attrs['vocab_size']:,}, top-{c.attrs['topk']} {c.attrs['dtype']}, "
           f"grid {', '.join(f'{t:g}' for t in grid)}; every dataset and attribute matches the digest written with "
           f"it; made by {other_code(c.attrs) or 'this code'})")
    if teacher is None:
        return
    model, ckpt = load_lm_teacher(teacher)
    if ckpt["fingerprint"] != c.attrs.get("teacher_fingerprint"):
        raise UsageError(f"cache {cache} was made by teacher {c.attrs.get('teacher_fingerprint')}, not by {teacher} "
                         f"({ckpt['fingerprint']})", fix="teacher-logits")
    tolerance = 2e-2 if c.attrs["dtype"] == "float16" else 1e-4
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        windows = TokenWindows(text, split, int(c.attrs["context"]), int(c.attrs["stride"]))
        rows = np.sort(rng.choice(len(windows), size=min(sample, len(windows)), replace=False)).tolist()
        if not rows:
            continue
        with torch.no_grad():
            fresh = token_targets(model.eval()(windows.batch(rows)[:, :-1]).float(), int(c.attrs["topk"]), grid)
        with h5py.File(cache, "r") as f:
            cached = {name: f[split][name][rows] for name in fresh}
        worst = max(float(np.abs(cached[n].astype(np.float32) - fresh[n].astype(np.float32)).max())
                    for n in fresh if n != "topk_ids")
        same_ids = "topk_ids" not in fresh or float((cached["topk_ids"] == fresh["topk_ids"]).mean())
        yield (f"  re-scored {len(rows)} {split} windows: largest difference {worst:.2e} (tolerance {tolerance:g}), "
               f"{100 * same_ids:.2f}% of top-k ids the same")
        if worst > tolerance or same_ids < 0.999:
            raise UsageError(f"cache {cache}: re-scored {split} windows are not {teacher}'s targets (largest "
                             f"difference {worst:.2e}); the cache was edited or made by another teacher",
                             fix="teacher-logits")

