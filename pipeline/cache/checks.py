"""What a cache file must satisfy before a student trusts it: pure checks on its attributes,
its shapes and each block of rows. Each returns None when the file passes, or what is wrong
in words; the reader (``pipeline.cache.reader``) turns that into an error that says how to fix it."""

from __future__ import annotations

import numpy as np

from pipeline.cache.format import READABLE_VERSIONS, VIEW_SPLIT

# Far above any image dataset's classes and any tokenizer's vocabulary; what lies beyond is a file built to make
# a reader allocate memory, not a cache.
MAX_CLASSES = 1 << 24

__all__ = ["MAX_CLASSES", "attrs_problem", "combine_problem", "shapes_problem", "block_problem", "expectation_problem"]


def attrs_problem(attrs: dict) -> str | None:
    if attrs.get("complete") is not True:
        return "not marked complete (the teacher pass did not finish)"
    if attrs.get("kind") == "tokens":
        return "is a per-token cache (text), which image students do not read; give an image cache"
    if attrs.get("format_version") not in READABLE_VERSIONS:
        return (f"format_version {attrs.get('format_version')} is not one this softcache reads "
                f"({', '.join(map(str, READABLE_VERSIONS))}); a newer softcache wrote it, or it is broken")
    c = attrs.get("num_classes")
    if not isinstance(c, int) or isinstance(c, bool) or not 1 <= c <= MAX_CLASSES:
        return f"num_classes attribute {c!r} is not a number of classes in [1, {MAX_CLASSES}]"
    k = attrs.get("topk", 0)
    if not isinstance(k, int) or not 0 <= k < c or attrs.get("storage") not in ("full", "topk") \
            or (attrs.get("storage") == "topk") != (k > 0):
        return f"storage attributes are broken (storage {attrs.get('storage')!r}, topk {k!r}, {c} classes)"
    r = attrs.get("transfer_rows", 0)
    if not isinstance(r, int) or r < 0 or (r and (attrs.get("format_version") < 2
                                                  or not isinstance(attrs.get("transfer_fingerprint"), str))):
        return f"transfer attributes are broken (transfer_rows {r!r} needs format_version 2 and a fingerprint)"
    t = attrs.get("temperature")
    if not isinstance(t, float) or not np.isfinite(t) or t <= 0:
        return f"temperature attribute {t!r} is not a positive number"
    grid = attrs.get("temperatures")
    if (attrs.get("format_version") == 3) != (grid is not None) or (grid is not None and (
            k == 0 or np.ndim(grid) != 1 or not len(grid) or not np.all(np.isfinite(grid)) or np.any(np.asarray(grid) <= 0))):
        return f"temperature grid {grid!r} is broken (format 3 top-k caches hold one; no other cache does)"
    k = attrs.get("views", 0)
    if not isinstance(k, int) or k < 0 or (k >= 2 and not all(
            isinstance(attrs.get(a), int) and attrs[a] >= 0 for a in ("view_seed", "view_pad"))):
        return f"views attributes are broken (views {k!r}, view_seed and view_pad must be integers)"
    mixup = attrs.get("view_mixup", 0)
    if not isinstance(mixup, (int, float)) or not mixup >= 0:
        return f"view_mixup attribute {mixup!r} is not a number >= 0"
    m = attrs.get("members", 0)
    if not isinstance(m, int) or m < 0 or m == 1:
        return f"members attribute {m!r} is not an ensemble size (0, or 2 and more)"
    return None


def combine_problem(path, combine: str | int, members: int) -> str | None:
    """An ensemble target (COMBINE) the cache cannot give; the whole message, since rebuilding is no fix."""
    if combine == "logits":
        return None
    what = f"member {combine}" if isinstance(combine, int) else "COMBINE=probs"
    if not members:
        return (f"cache {path} holds one teacher's logits, so {what} has no ensemble to pick from; build an "
                f"ensemble cache with TEACHERS=3, or use COMBINE=logits")
    if isinstance(combine, int) and combine >= members:
        return (f"cache {path} holds {members} ensemble members (0-{members - 1}), so member {combine} is missing "
                f"from it; use COMBINE=0..{members - 1} or rebuild it with TEACHERS={combine + 1}")
    return None


def shapes_problem(split: str, shapes: dict[str, tuple], required: tuple[str, ...], *, num_classes: int, topk: int,
                   members: int, views: int, train_rows: int, grid: int = 0) -> str | None:
    missing = [name for name in required if name not in shapes]
    if missing:
        return f"{split} lacks {', '.join(missing)}"
    n = shapes["labels"][0] if len(shapes["labels"]) == 1 else -1
    if split == VIEW_SPLIT and n != train_rows * views:
        return f"{split} has {n} rows, not {views} views of {train_rows} images"
    c, k = num_classes, topk
    want = {"logits": (n, c), "topk_logits": (n, k), "topk_classes": (n, k), "tail_logit": (n,), "labels": (n,),
            "tail_logits": (n, grid),
            "index": (n,), "params": (n, 3), "member_logits": (n, members, c), "mix_partner": (n,),
            "mix_weight": (n,)}
    wrong = {name: shapes[name] for name in required if shapes[name] != want[name]}
    if wrong:
        return f"{split} shapes disagree with {n} rows and {c} classes: {wrong}"
    return None


def block_problem(split: str, lo: int, block: dict, value_names: tuple[str, ...], *, num_classes: int, views: int,
                  view_pad: int, mixup: bool, train_rows: int, transfer_rows: int = 0) -> str | None:
    """Rows [lo, lo + B) of a split: finite logits, labels and classes in range, dataset order, views.
    The last ``transfer_rows`` images of the train split (and their views) carry the label C, none other."""
    c = num_classes
    for name in value_names:
        if name != "topk_classes" and not np.isfinite(block[name]).all():
            return f"{split} logits contain NaN or Inf"
    if "topk_classes" in block and len(block["topk_classes"]) and block["topk_classes"].max() >= c:
        return f"{split} top-k classes lie outside [0, {c})"
    labels = block["labels"]
    rows = np.arange(lo, lo + len(labels))
    if transfer_rows and split != "test":
        unlabelled = (rows // views if split == VIEW_SPLIT else rows) >= train_rows - transfer_rows
        if len(labels) and (not (labels[unlabelled] == c).all() or (labels[~unlabelled] >= c).any()):
            return f"{split} labels break the transfer rows' rule (label {c} on the last {transfer_rows} rows only)"
    elif len(labels) and (labels.min() < 0 or labels.max() >= c):
        return f"{split} labels lie outside [0, {c})"
    if not np.array_equal(block["index"], rows // views if split == VIEW_SPLIT else rows):
        return f"{split} rows are not in dataset order"
    if split == VIEW_SPLIT and len(labels):
        params = block["params"]
        if params[:, :2].max() > 2 * view_pad or params[:, 2].max() > 1:
            return f"{split} view params lie outside the {view_pad}-pixel crop and flip they claim"
        if mixup and (block["mix_partner"].max() >= train_rows or block["mix_weight"].min() < 128):
            return f"{split} mixup partners or weights lie outside [0, {train_rows}) and [128, 255]"
    return None


def expectation_problem(expected: dict, found: dict) -> str | None:
    """The caller's expectations (None: not checked) against what the file says."""
    what = {"dataset_fingerprint": "was made from a different dataset",
            "teacher_fingerprint": "was made by a different teacher than the one there now (the cache is older "
                                   "than a replaced teacher, or names another): delete it, and",
            "num_classes": "has a different number of classes",
            "train_rows": "has a different number of training rows"}
    for name, want in expected.items():
        if want is not None and want != found.get(name):
            problem, _, then = what[name].partition(": ")
            return f"{problem} ({name} {found.get(name)}, expected {want})" + (f": {then}" if then else "")
    return None
