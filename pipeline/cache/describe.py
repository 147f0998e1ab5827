"""What a cache holds, in words: the rows of ``softcache inspect`` (after every reader check), and what
its soft targets look like at a temperature."""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from pipeline.cache.lm_reader import TokenCache
from pipeline.cache.reader import LogitCache
from pipeline.provenance import other_code

__all__ = ["describe", "describe_tokens", "is_token_cache"]


def _folder(attrs) -> str:
    if "dataset_source" not in attrs:
        return ""
    r = json.loads(attrs["dataset_source"])
    skipped = f", {len(r['skipped'])} unreadable left out" if r["skipped"] else ""
    return (f", from image folder {r['folder']} ({r['files']} files{skipped}; paths sha256 {r['paths_digest'][:12]}, "
            f"contents sha256 {r['contents_digest'][:12]})")


def is_token_cache(cache: Path) -> bool:
    """A per-token cache (kind 'tokens'), told by its attributes before any reader checks it."""
    try:
        with h5py.File(cache, "r") as f:
            return f.attrs.get("kind") == "tokens"
    except OSError:
        return False        # the image reader then says what is wrong with the file


def describe(cache: Path, T: float, trust_undigested: bool = False) -> list[tuple[str, object]]:
    """(label, value) rows describing the cache at ``cache``; its entropy column is at temperature ``T``."""
    if is_token_cache(cache):
        return describe_tokens(cache)
    c = LogitCache(cache, trust_undigested=trust_undigested)
    p = c.soft_targets(T)
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
    rows = [
        ("file", f"{cache} ({cache.stat().st_size / 1e6:.2f} MB)"),
        ("rows", f"{c.train_rows} train, {len(c.labels('test'))} test"
                 + (f" (the last {c.transfer_rows} train rows: transfer set {c.attrs.get('transfer')}, unlabelled)"
                    if c.transfer_rows else "")),
        ("classes", c.num_classes),
        ("views", f"{c.views} per image" + (f", mixup pairs (Beta {c.mixup:g})" if c.mixup else "")
                  if c.views else "1 per image (the clean image)"),
        ("members", f"ensemble of {c.members}, test accuracy each: "
                    + ", ".join(f"{100 * a:.2f}%" for a in c.attrs["member_test_acc"]) if c.members else "one teacher"),
        ("published", c.attrs["published_record"] if c.attrs.get("published") else "no (made here)"),
        ("reading", "in memory" if c.in_memory else "streamed from the file (larger than the memory limit)"),
        ("temperature", f"{c.temperature:g} (logits stored divided by it)"),
        ("storage", f"{c.attrs.get('storage', 'full')}, {c.attrs.get('dtype', 'float32')}"
                    + (f", top-{c.attrs['topk']} + tail" if c.attrs.get("topk") else "")
                    + (f", the tail exact at T = {' '.join(f'{t:g}' for t in c.grid)}" if c.grid else "")),
        ("bytes/sample", f"{cache.stat().st_size / (c.train_rows + len(c.labels('test'))):.1f} (whole file)"),
        ("teacher", f"{c.attrs.get('teacher')} {c.attrs.get('teacher_fingerprint')}"),
        ("dataset", f"{c.attrs.get('dataset')} {c.attrs.get('dataset_fingerprint')}" + _folder(c.attrs)),
        ("teacher acc", f"train {100 * c.teacher_accuracy('train'):.2f}%, test {100 * c.teacher_accuracy('test'):.2f}% "
                        f"(recorded at training: {100 * c.attrs.get('teacher_test_acc', float('nan')):.2f}%)"),
        (f"entropy @T={T:g}", f"{entropy:.3f} nats (max {float(p.new_tensor(c.num_classes).log()):.3f})"),
        ("created", c.attrs.get("created")),
        ("made by", other_code(c.attrs) or f"this code (softcache {c.attrs['softcache_version']}, sources "
                                            f"{c.attrs['source_digest']})"),
        ("fingerprint", c.fingerprint),
    ]
    return rows


def describe_tokens(cache: Path, sample: int = 256) -> list[tuple[str, object]]:
    """(label, value) rows for a per-token cache: its shape, provenance, bytes per position, and (over the
    first ``sample`` train windows) the mass kept at k and the tail's mass at each grid temperature."""
    c = TokenCache(cache)
    a, grid = c.attrs, c.temperatures
    positions = sum(c.windows(s) for s in ("train", "val", "test")) * a["context"]
    rows = [("file", f"{cache} ({cache.stat().st_size / 1e6:.2f} MB)"),
            ("windows", f"{c.windows('train')} train, {c.windows('val')} val, {c.windows('test')} test, of "
                        f"{a['context']} tokens (stride {a.get('stride')})"),
            ("vocabulary", f"{a['vocab_size']:,} ({a.get('tokenizer')} {a.get('tokenizer_fingerprint')})"),
            ("storage", f"{a['storage']}, {a['dtype']}" + (f", top-{a['topk']} + the exact tail" if a["topk"] else "")),
            ("grid", ", ".join(f"T={t:g}" for t in grid) + ("" if a["topk"] else " (dense: any T reads)")),
            ("bytes/position", f"{cache.stat().st_size / max(positions, 1):.1f} (whole file; dense float32 "
                               f"{4 * a['vocab_size']:,})"),
            ("teacher", f"{a.get('teacher')} {a.get('teacher_fingerprint')}, bits per byte on this text: "
                        + ", ".join(f"{split} {a[f'teacher_{split}_bits_per_byte']:.3f}" for split in ("val", "test")
                                    if f"teacher_{split}_bits_per_byte" in a)),
            ("text", f"{a.get('corpus')} {a.get('corpus_fingerprint')}" + (f", Python {a['python']}" if a.get("python") else "")
                     + f", prepared {a.get('text_fingerprint')}")]
    windows = list(range(min(sample, c.windows("train"))))
    if a["topk"] and windows:
        for T in grid:
            _, support, tail = c.targets("train", windows, T)
            rows.append((f"mass @T={T:g}", f"top-{a['topk']} {100 * float(support.exp().sum(-1).mean()):.2f}%, "
                                           f"tail {100 * float(tail.exp().mean()):.2f}%"))
    rows += [("created", a.get("created")),
             ("made by", other_code(a) or f"this code (softcache {a['softcache_version']}, sources {a['source_digest']})")]
    return rows

