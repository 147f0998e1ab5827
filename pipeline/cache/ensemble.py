"""Caches made from finished caches, with no teacher run: ensembles and published caches.

An ensemble is only worth its cost when its members are cached: each member's teacher
pass runs once (``make teacher-logits`` per member, so Make redoes only a member that
changed), and combining them is a read of a few files. The ensemble cache keeps every
member's logits beside their mean, so a student can also learn from the mean of the
probabilities or from one member (``COMBINE``) without another pass.

A published cache is the hand-over from a GPU box to CPU-only users: one cache, in
float16, marked ``published`` with a record of how it was made, and committed with the
code. Its teacher accuracy is recomputed from the stored test logits, so
``softcache verify`` can check the file against its own record.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.cache.format import TRANSFER_ATTRS, VIEW_SPLIT, seal, write_cache
from pipeline.cache.reader import LogitCache
from pipeline.config import EnsembleConfig, PublishConfig
from pipeline.errors import UsageError
from pipeline.files import atomic_path, read_json
from pipeline.provenance import code_version

__all__ = ["write_ensemble", "publish_cache", "published_record_path", "check_recorded_accuracy"]

# Attributes every member must share: a student must not be able to tell which member made a row.
_SHARED_ATTRS = ("dataset_fingerprint", "num_classes", "temperature", "views", "view_seed", "view_pad", "view_mixup",
                 "transfer_rows", "transfer_fingerprint")


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=-1) == labels).mean())


def _check_members(members: list[LogitCache], records: tuple[Path, ...]) -> None:
    first = members[0]
    for cache in members:
        if cache.attrs.get("topk", 0):
            raise UsageError(f"ensemble member {cache.path} stores only the top-{cache.attrs['topk']} logits; "
                             f"members must store every logit: rebuild it with CACHE_TOPK=0")
        if cache.members:
            raise UsageError(f"ensemble member {cache.path} is itself an ensemble; give its member caches instead")
        for name in _SHARED_ATTRS:
            if cache.attrs.get(name) != first.attrs.get(name):
                raise UsageError(f"ensemble members disagree on {name}: {first.path} has {first.attrs.get(name)!r}, "
                                 f"{cache.path} has {cache.attrs.get(name)!r}; rebuild them with the same "
                                 f"dataset, TRANSFER, TEACHER_T, VIEWS, VIEW_SEED and MIXUP")
        if not np.array_equal(cache.labels("train"), first.labels("train")):
            raise UsageError(f"ensemble members {first.path} and {cache.path} hold different labels; "
                             f"rebuild them from the same dataset")
    for cache, record in zip(members, records):
        want = read_json(record).get("fingerprint") if record.is_file() else None
        if want != cache.attrs.get("teacher_fingerprint"):
            raise UsageError(f"ensemble member {cache.path} was not made by the teacher in {record}; "
                             f"rebuild that member's cache", fix="teacher-logits")


def _write_from(sources: list[LogitCache], out: Path, *, dtype: str, attrs: dict, keep_members: bool) -> None:
    """One new cache holding the sources' mean logits (and each source's, with ``keep_members``),
    with the first source's labels, order and views."""
    first = sources[0]
    k, temperature = first.views, first.temperature
    params = first.view_params().reshape(-1, 3).numpy().astype(np.uint8) if k else None
    mix = first.view_mix(k) if k else None
    mix = None if mix is None else (mix[0].reshape(-1).numpy(), mix[1].reshape(-1).numpy().astype(np.uint8))
    with write_cache(out, rows={s: first.rows(s) for s in first.splits}, num_classes=first.num_classes,
                     temperature=temperature, attrs=attrs, dtype=dtype,
                     members=len(sources) if keep_members else 0) as writer:
        for split in first.splits:
            stack = np.stack([c.logits(split).numpy() for c in sources], axis=1) / temperature   # (n, M, C)
            views = split == VIEW_SPLIT
            writer.write(split, 0, stack.mean(axis=1), first.labels(split),
                         np.arange(first.rows(split)) // (k if views else 1),
                         params if views else None, mix if views else None, stack if keep_members else None)


def write_ensemble(cfg: EnsembleConfig) -> dict:
    """Combine member caches into one ensemble cache; return its accuracies."""
    members = [LogitCache(path) for path in cfg.members]
    _check_members(members, cfg.records)
    first = members[0]
    test_labels = first.labels("test")
    test = np.stack([c.logits("test").numpy() for c in members], axis=1)
    mean_probs = torch.softmax(torch.from_numpy(test), dim=-1).mean(dim=1).numpy()
    member_records = [{"name": Path(c.path).stem, "teacher": c.attrs.get("teacher"),
                       "teacher_fingerprint": c.attrs.get("teacher_fingerprint"),
                       "test_acc": _accuracy(test[:, m], test_labels), "cache_fingerprint": c.fingerprint}
                      for m, c in enumerate(members)]
    fingerprints = "".join(r["teacher_fingerprint"] or "" for r in member_records)
    summary = {
        "members": len(members),
        "member_test_acc": [r["test_acc"] for r in member_records],
        "teacher_test_acc": _accuracy(test.mean(axis=1), test_labels),     # the mean of logits: COMBINE=logits
        "ensemble_probs_test_acc": _accuracy(mean_probs, test_labels),     # the mean of probabilities
    }
    attrs = {
        **{name: first.attrs[name] for name in ("dataset_fingerprint", "dataset", "class_names", "views",
                                                "view_seed", "view_pad", "view_mixup", *TRANSFER_ATTRS)
           if name in first.attrs},
        "teacher": f"ensemble of {len(members)}: " + ", ".join(r["name"] for r in member_records),
        "teacher_fingerprint": hashlib.sha256(fingerprints.encode()).hexdigest()[:16],
        "producer": "softcache ensemble",
        "member_records": json.dumps(member_records),
        **summary,
    }
    passes = [c.attrs.get("pass_seconds") for c in members]
    if all(isinstance(p, float) for p in passes):     # the ensemble's teacher-pass cost: every member's pass
        attrs["pass_seconds"] = sum(passes)
    _write_from(members, cfg.out, dtype=cfg.dtype, attrs=attrs, keep_members=True)
    return {"path": str(cfg.out), **summary, "member_names": [r["name"] for r in member_records]}


def published_record_path(cache: Path) -> Path:
    """The human-readable record committed beside a published cache."""
    return Path(cache).with_suffix(".json")


def publish_cache(cfg: PublishConfig) -> dict:
    """Write a float16 copy of a finished cache, marked published, and its record beside it."""
    start = time.perf_counter()
    out = Path(cfg.out)
    if (out.exists() or out.is_symlink()) and cfg.replace != out.stem:
        raise UsageError(f"{out} is already published, and a published cache is replaced only when asked by name: "
                         f"make publish REPUBLISH={out.stem} (softcache publish --replace {out.stem})")
    source = LogitCache(cfg.cache)
    teachers = [read_json(r) for r in cfg.records]
    test = (source.logits("test").numpy() / source.temperature).astype(np.float16).astype(np.float32)
    acc = _accuracy(test, source.labels("test"))        # what the float16 file will say, checked by verify
    record = {
        "command": cfg.command,
        "device": cfg.device,
        "teacher": source.attrs.get("teacher"),
        "teacher_test_acc": acc,
        "teacher_test_acc_as_trained": source.attrs.get("teacher_test_acc"),
        "teacher_seconds": sum(t.get("train_seconds", 0.0) for t in teachers) if teachers else None,
        "teacher_devices": sorted({t.get("device_name", "?") for t in teachers}),
        "pass_seconds": source.attrs.get("pass_seconds"),
        "source_cache": Path(cfg.cache).name,
        "source_fingerprint": source.fingerprint,
        "dataset_fingerprint": source.attrs.get("dataset_fingerprint"),
        "views": source.views,
        "view_mixup": source.mixup,
        "published": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "note": cfg.note,
    }
    keep = ("dataset_fingerprint", "dataset", "class_names", "teacher", "teacher_fingerprint", "device",
            "views", "view_seed", "view_pad", "view_mixup", "member_records", "member_test_acc",
            "ensemble_probs_test_acc", *TRANSFER_ATTRS)
    attrs = {**{k: source.attrs[k] for k in keep if k in source.attrs}, "teacher_test_acc": acc,
             "producer": "softcache publish", "published": True, "published_record": json.dumps(record)}
    _write_from([source], cfg.out, dtype="float16", attrs=attrs, keep_members=False)
    record["bytes"] = Path(cfg.out).stat().st_size
    record["fingerprint"] = LogitCache(cfg.out).fingerprint
    with atomic_path(published_record_path(cfg.out)) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return {**record, "path": str(cfg.out), "seconds": time.perf_counter() - start}


def reseal_published(path: Path, why: str) -> dict:
    """Seal a published cache made before digests covered attributes (or before digests): its values are
    checked against what its record says (every reader check, and the recorded test accuracy to the image),
    then its digests and code version are written over the same values, and the record says when and why.
    The logits are not touched, so the teacher and its accuracy stay what they were."""
    path = Path(path)
    cache = LogitCache(path, trust_undigested=True)
    check_recorded_accuracy(cache)
    record_path = published_record_path(path)
    record = read_json(record_path)
    record["resealed"] = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "why": why,
                          "source_fingerprint_before": cache.fingerprint, **code_version()}
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            f.attrs.update({**code_version(), "published_record": json.dumps(record)})
            seal(f)
    record["fingerprint"] = LogitCache(path).fingerprint          # digests now required: it proves itself
    record["bytes"] = path.stat().st_size
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


def check_recorded_accuracy(cache: LogitCache) -> tuple[float, float]:
    """(recorded, recomputed) test accuracy of the cached teacher; a UsageError when they differ by a
    test image or more, which means the logits are not the ones the record describes."""
    recorded = cache.attrs.get("teacher_test_acc")
    recomputed = cache.teacher_accuracy("test")
    n = len(cache.labels("test"))
    if not isinstance(recorded, float) or round(recorded * n) != round(recomputed * n):
        raise UsageError(f"cache {cache.path}: its test logits give {100 * recomputed:.2f}% but it records "
                         f"{recorded if recorded is None else f'{100 * recorded:.2f}%'} for its teacher; "
                         f"the file does not hold what its record says, so rebuild or re-download it")
    return recorded, recomputed
