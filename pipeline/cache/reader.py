"""The logit cache's reader: a verified view of one file, in memory when it fits, streamed when not.

The layout and the writer live in ``pipeline.cache.format``, the checks a file must pass in
``pipeline.cache.checks``; this module opens the file, runs them, and serves soft targets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.cache import checks as cache_checks
from pipeline.cache.format import (
    SPLITS,
    VIEW_SPLIT,
    ContentDigest,
    dense_logits,
    file_attrs,
    parse_combine,
    split_names,
    storage_bytes,
    stored_names,
    structure_problem,
)
from pipeline.cache.lm_format import grid_index
from pipeline.errors import UsageError

__all__ = ["LogitCache", "CacheExpectations"]



@dataclass(frozen=True)
class CacheExpectations:
    """What the reader checks the file against; ``None`` means 'not checked'."""

    dataset_fingerprint: str | None = None
    teacher_fingerprint: str | None = None
    num_classes: int | None = None
    train_rows: int | None = None      # the labelled dataset's training rows (a transfer set's come on top)


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
                 memory_limit_bytes: int = 4 << 30, block_bytes: int = 64 << 20, combine: str | int = "logits",
                 trust_undigested: bool = False):
        """``combine`` picks an ensemble's targets: 'logits' (the mean of the members' logits, also
        what a single teacher's cache holds), 'probs' (the mean of their probabilities at the
        student's T) or a member number. The check reads at most ``block_bytes`` of dense logits at a
        time, whatever the number of classes. ``trust_undigested`` accepts a file without digests (made
        by an older softcache): its values and attributes then prove nothing."""
        self.path = Path(path)
        self.combine = parse_combine(combine)
        if not self.path.is_file():
            raise UsageError(f"cache {self.path} is missing", fix="teacher-logits")
        self.attrs: dict = {}
        self._handle: h5py.File | None = None
        self._handle_pid: int | None = None
        self._memo: tuple = (None, None)
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = file_attrs(f)
                self._check(cache_checks.attrs_problem(self.attrs))
                combine_problem = cache_checks.combine_problem(self.path, self.combine, self.members)
                if combine_problem:
                    raise UsageError(combine_problem)
                self.splits = SPLITS + ((VIEW_SPLIT,) if self.views else ())
                self._check(structure_problem(f, self.splits))
                self._shapes = {split: {name: ds.shape for name, ds in f[split].items()} for split in self.splits}
                self._check_shapes()
                dense_bytes = sum(self.rows(s) for s in self.splits) * self.num_classes * 4
                self.in_memory = dense_bytes * max(1, self.members if self.combine == "probs" else 1) \
                    <= memory_limit_bytes
                if self.combine == "probs" and not self.in_memory:
                    raise UsageError(f"cache {self.path} is too large to hold in memory, which COMBINE=probs "
                                     f"needs; raise --cache-memory-mb or use COMBINE=logits")
                width = self.num_classes * 4 * max(1, self.members)
                self._scan(f, max(1, min(65536, block_bytes // width)), trust_undigested)
        except UsageError:
            raise
        except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
            raise UsageError(f"cache {self.path} is unreadable or corrupt ({_first_line(exc)})",
                             fix="teacher-logits") from None
        self._check_expectations(expect)

    # --- checks ---------------------------------------------------------------------
    def _fail(self, what: str) -> UsageError:
        if self.attrs.get("published"):     # made elsewhere: rebuilding it here is not the fix
            return UsageError(f"published cache {self.path}: {what}; it can only be used as published, with the "
                              f"dataset it was made from (the full Fashion-MNIST, LIMIT=0): restore it with "
                              f"'git checkout {self.path}', or drop TEACHER=published to train a teacher here")
        return UsageError(f"cache {self.path}: {what}", fix="teacher-logits")

    def _check(self, problem: str | None) -> None:
        if problem is not None:
            raise self._fail(problem)

    @property
    def _value_names(self) -> tuple[str, ...]:
        """The datasets a row's (combined) logits are read from."""
        return ("member_logits",) if isinstance(self.combine, int) else stored_names(int(self.attrs.get("topk", 0)),
                                                                                     bool(self.grid))

    @property
    def grid(self) -> tuple[float, ...]:
        """The temperatures a top-k cache of format 3 holds the exact tail at (() for any other cache)."""
        return tuple(float(t) for t in self.attrs.get("temperatures", ()))

    def _column(self, T: float | None) -> int | None:
        """The grid column read at student temperature T; a T off a cache's grid is refused in one line."""
        return None if T is None or not self.grid else grid_index(self.grid, T)

    def _dense_block(self, block: dict, T: float | None = None) -> np.ndarray:
        """Stored-scale (B, C) float32 logits of a block, as ``combine`` picks them; for a grid cache, with the
        tail classes at T's value, so softmax(z * temperature / T) has the tail's exact total."""
        if isinstance(self.combine, int):
            return block["member_logits"][:, self.combine].astype(np.float32)
        return dense_logits(block, self.num_classes, self._column(T))

    def _check_shapes(self) -> None:
        for split, shapes in self._shapes.items():
            required = split_names(split, topk=int(self.attrs.get("topk", 0)), members=self.members,
                                   mixup=bool(self.mixup), grid=bool(self.grid))
            self._check(cache_checks.shapes_problem(
                split, shapes, required, num_classes=self.num_classes, topk=int(self.attrs.get("topk", 0)),
                members=self.members, views=self.views, train_rows=self.rows("train"), grid=len(self.grid)))

    def _check_block(self, split: str, lo: int, block: dict) -> None:
        names = (*self._value_names, *(("member_logits",) if self.members else ()))
        self._check(cache_checks.block_problem(
            split, lo, block, names, num_classes=self.num_classes, views=self.views,
            view_pad=self.attrs.get("view_pad", 0), mixup=bool(self.mixup), train_rows=self.train_rows,
            transfer_rows=self.transfer_rows))

    def _scan(self, f: h5py.File, block_rows: int, trust_undigested: bool) -> None:
        """Read every row once, in blocks: check it, fingerprint it, keep labels (and logits in memory)."""
        content = ContentDigest(self.num_classes)      # one sha256 per dataset: independent of block size
        self._labels, self._dense_logits, self._members, params, mix = {}, {}, {}, [], []
        keep_members = self.combine == "probs"
        for split in self.splits:
            n, g = self.rows(split), f[split]
            labels, dense = [np.empty(0, np.int64)], [np.empty((0, self.num_classes), np.float32)]
            members = [np.empty((0, self.members, self.num_classes), np.float32)]
            for lo in range(0, n, block_rows):
                block = {name: g[name][lo:lo + block_rows] for name in sorted(g)}
                self._check_block(split, lo, block)
                content.update(split, block)
                labels.append(block["labels"].astype(np.int64))
                if split == VIEW_SPLIT:
                    params.append(block["params"])
                    if self.mixup:
                        mix.append(np.stack([block["mix_partner"].astype(np.int64),
                                             block["mix_weight"].astype(np.int64)], axis=1))
                if self.in_memory:
                    dense.append({n: block[n] for n in self._value_names} if self.grid else self._dense_block(block))
                if keep_members:
                    members.append(block["member_logits"].astype(np.float32))
            self._labels[split] = np.concatenate(labels)
            if self.in_memory and self.grid:      # the stored top-k and tails, not dense: a T picks the tail
                self._dense_logits[split] = {n: np.concatenate([b[n] for b in dense[1:]]) for n in self._value_names}
            else:
                self._dense_logits[split] = np.concatenate(dense) if self.in_memory else None
            self._members[split] = np.concatenate(members) if keep_members else None
        self._view_params = np.concatenate(params).reshape(-1, self.views, 3) if params else None
        self._view_mix = np.concatenate(mix).reshape(-1, self.views, 2) if mix else None
        self._check(content.problem(self.attrs, trust_undigested))
        self.digests_checked = content.problem(self.attrs) is None
        h = hashlib.sha256(repr(self.temperature).encode())
        for key, hexdigest in content.digests().items():
            h.update(key.encode() + bytes.fromhex(hexdigest))
        self.fingerprint = h.hexdigest()[:16]

    def _check_expectations(self, e: CacheExpectations) -> None:
        found = {"dataset_fingerprint": self.attrs.get("dataset_fingerprint"),
                 "teacher_fingerprint": self.attrs.get("teacher_fingerprint"),
                 "num_classes": self.num_classes, "train_rows": self.train_rows - self.transfer_rows}
        self._check(cache_checks.expectation_problem(dataclasses.asdict(e), found))

    # --- reading --------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.attrs["num_classes"])

    def rows(self, split: str) -> int:
        return self._shapes[split]["labels"][0]

    @property
    def train_rows(self) -> int:
        """Rows of the train split: the labelled dataset's, then any transfer set's."""
        return self.rows("train")

    @property
    def transfer_rows(self) -> int:
        """Unlabelled transfer-set rows at the end of the train split (label value C); 0 without a transfer set."""
        return int(self.attrs.get("transfer_rows", 0))

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
            raise UsageError(f"cache {self.path} holds no augmented views, so REPLAY={k} has nothing to replay "
                             f"(or use REPLAY=0)", fix="teacher-logits", fix_settings={"VIEWS": max(k, 2)})
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


    def _stored(self, split: str, idx: np.ndarray | None = None, T: float | None = None) -> np.ndarray:
        """Stored-scale logits of ``split`` (all rows, or rows ``idx``): (B, C) float32; for a grid cache read
        at T (see ``_dense_block``)."""
        if self.in_memory:
            held = self._dense_logits[split]
            if self.grid:
                return self._dense_block({n: v if idx is None else v[idx] for n, v in held.items()}, T)
            return held if idx is None else held[idx]
        g = self._file()[split]
        if idx is None:
            return self._dense_block({name: g[name][()] for name in self._value_names}, T)
        order = np.argsort(idx, kind="stable")              # h5py reads increasing indices only
        block = self._dense_block({name: g[name][idx[order]] for name in self._value_names}, T)
        out = np.empty_like(block)
        out[order] = block
        return out

    def stored_logits(self, split: str, rows: np.ndarray, T: float | None = None) -> np.ndarray:
        """The logits of ``rows`` as stored (divided by the temperature): (B, C) float32; for a top-k cache with
        a temperature grid, with the tail that is exact at T (a T off its grid is refused)."""
        return self._stored(split, np.asarray(rows), T)

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
        return self.log_soft_targets(T, split).exp() if self.grid else torch.softmax(self.logits(split) / T, dim=-1)

    def log_soft_targets(self, T: float, split: str = "train") -> torch.Tensor:
        """log_softmax(z_stored * temperature / T): (N, C) float32, for KL with log_target.
        With COMBINE=probs: log of the mean over members of softmax(z_m * temperature / T)."""
        if self.combine == "probs":
            z = torch.from_numpy(self._members[split]) * self.temperature
            return torch.logsumexp(torch.log_softmax(z / T, dim=-1), dim=1) - math.log(self.members)
        return torch.log_softmax(torch.from_numpy(self._stored(split, T=T)) * self.temperature / T, dim=-1)

    def batch_log_soft_targets(self, idx: torch.Tensor, T: float, split: str = "train") -> torch.Tensor:
        """log_softmax at T for rows idx (B,) int64: (B, C) float32, from memory or from the file."""
        if self.in_memory:
            if self._memo[0] != (T, split):
                self._memo = ((T, split), self.log_soft_targets(T, split))
            return self._memo[1][idx]
        z = torch.from_numpy(self._stored(split, idx.cpu().numpy(), T)) * self.temperature
        return torch.log_softmax(z / T, dim=-1).to(idx.device)

    def batch_view_log_soft_targets(self, rows: torch.Tensor, view: torch.Tensor, T: float) -> torch.Tensor:
        """log_softmax at T of the teacher's logits for view ``view`` (B,) of training rows ``rows`` (B,)."""
        return self.batch_log_soft_targets(rows * self.views + view.to(rows.device), T, VIEW_SPLIT)

    def storage_bytes(self) -> dict[str, int]:
        """Bytes each split takes in the file: what a cached arm costs on disk."""
        return storage_bytes(self.path)

    def teacher_accuracy(self, split: str = "test") -> float:
        """Accuracy of the cached teacher logits against the cached labels (transfer rows have none)."""
        labels = self._labels[split]
        labelled = labels < self.num_classes
        return float((self.logits(split).argmax(dim=1).numpy()[labelled] == labels[labelled]).mean())


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
