"""The teacher pass: eval-mode inference over both splits, in dataset order, into the cache.

The pass is the expensive step, so a crash must not cost it all. It runs in fixed-size
row chunks, and each finished chunk's logits are saved (atomically) as one ``.npy`` in a
parts directory beside the cache. Running the same command again skips every chunk that
is there, and a chunk's values do not depend on which run computed it (same rows, same
batches), so a resumed cache is identical to an uninterrupted one. The parts are keyed
by teacher, dataset and chunking: a different teacher starts afresh. Only when every
chunk exists is the HDF5 file assembled, and it gets its final name last.

Launched by ``torchrun --nproc-per-node N``, the pass is sharded: each rank computes its
contiguous slice of the chunks into the same parts directory, and rank 0 assembles the one
cache once all ranks are done, so readers cannot tell a sharded cache from a 1-process one.
A killed rank's finished chunks are kept: the same
command resumes per shard.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.augment import DEFAULT_PAD, draw_view_mix, draw_view_params
from pipeline.cache.format import VIEW_SPLIT, estimated_bytes, write_cache
from pipeline.cache.rows import SplitRows
from pipeline.config import LogitsConfig, as_record, resolve_device
from pipeline.data.prepare import load_prepared
from pipeline.data.transfer import load_transfer
from pipeline.errors import UsageError
from pipeline.files import (
    exclusive_writer,
    lock_path,
    need_space,
)
from pipeline.teacher.pass_parts import Parts, World, parts_dir
from pipeline.teacher.source import check_batch_output, check_output_width, load_teacher
from pipeline.training.loop import predict

__all__ = ["write_teacher_logits", "parts_dir", "lock_path"]



def write_teacher_logits(cfg: LogitsConfig, progress: bool = True) -> dict:
    """Run the teacher over train and test (resuming finished chunks) and write the cache."""
    data = load_prepared(cfg.dataset)
    teacher = load_teacher(cfg.teacher, cfg.teacher_weights)
    check_output_width(teacher, torch.from_numpy(np.asarray(data.x_test[:3])).float() / 255.0, data.num_classes)
    model = teacher.model
    if not cfg.topk < data.num_classes:
        raise UsageError(f"CACHE_TOPK={cfg.topk} must be below the {data.num_classes} classes (0 keeps all)")
    world = World.from_environment(resolve_device(cfg.device))
    device = world.device
    model.to(device)
    amp = device.startswith("cuda")
    x_train, y_train, transfer_attrs = data.x_train, data.y_train, {}
    if cfg.transfer is not None:    # unlabelled rows after the labelled ones, with the label value C
        transfer = load_transfer(cfg.transfer, data.image_shape)
        x_train = np.concatenate([np.asarray(data.x_train), transfer.x])
        y_train = np.concatenate([data.y_train, np.full(len(transfer.x), data.num_classes, data.y_train.dtype)])
        transfer_attrs = {"transfer": transfer.name, "transfer_rows": len(transfer.x),
                          "transfer_fingerprint": transfer.fingerprint,
                          "transfer_labels_ignored": transfer.labels_ignored}
    splits = {"train": SplitRows(x_train, y_train), "test": SplitRows(data.x_test, data.y_test)}
    n = len(y_train)
    if cfg.views > 1:
        mix = draw_view_mix(n, cfg.views, cfg.view_seed, cfg.mixup) if cfg.mixup else None
        splits[VIEW_SPLIT] = SplitRows(x_train, y_train, draw_view_params(n, cfg.views, cfg.view_seed), cfg.views, mix)
    # How the views were drawn: part of the parts key (other views, other chunks) and of the attrs.
    view_attrs = {"views": cfg.views, "view_seed": cfg.view_seed, "view_pad": DEFAULT_PAD,
                  **({"view_mixup": float(cfg.mixup)} if cfg.mixup else {})} if cfg.views > 1 else {}
    # The key leaves out the number of processes: a chunk's values do not depend on which
    # rank computed it, so a 2-process pass can resume a 1-process one and vice versa.
    key = {"teacher": teacher.fingerprint, "dataset": data.fingerprint, "chunk_rows": cfg.chunk_rows,
           "batch_size": cfg.batch_size, "device": device.split(":")[0], **view_attrs,
           **{k: v for k, v in transfer_attrs.items() if k == "transfer_fingerprint"}}
    attrs = {
        "teacher": teacher.name,
        "teacher_fingerprint": teacher.fingerprint,
        "dataset_fingerprint": data.fingerprint,
        "dataset": data.name,
        "producer": "softcache teacher-logits",
        "device": device.split(":")[0],
        "class_names": list(data.class_names),
        # An image folder's files (paths and contents): which picture each row's logits are for.
        **({"dataset_source": json.dumps(data.source.record())} if data.source is not None else {}),
        **view_attrs,
        **transfer_attrs,
    }
    start = time.perf_counter()
    computed = 0
    chunks = [(split, i, lo, min(lo + cfg.chunk_rows, len(rows)))
              for split, rows in splits.items() for i, lo in enumerate(range(0, len(rows), cfg.chunk_rows))]
    with world.session(), (exclusive_writer(cfg.out) if world.rank == 0 else contextlib.nullcontext()):
        sizes = {(split, i): hi - lo for split, i, lo, hi in chunks}

        def part_problem(split: str, i: int, logits: np.ndarray) -> str | None:
            """A finished chunk before it is sealed: its rows' logits, all finite (Parts)."""
            if (logits.dtype != np.float32 or logits.shape[0] != sizes.get((split, i))
                    or logits.shape[-1] != data.num_classes):
                return f"the part is {logits.dtype} {logits.shape}, not its chunk's rows of {data.num_classes} logits"
            return None if np.isfinite(logits).all() else "the part holds NaN or Inf"

        if world.rank == 0:
            parts = Parts(parts_dir(cfg.out), key, check=part_problem)   # clears parts of another teacher or dataset
            fresh = not any(parts.dir.glob("*.npy"))  # then the pass's time is the whole pass's cost
        world.barrier()
        if world.rank != 0:
            parts = Parts(parts_dir(cfg.out), key, check=part_problem)
        mine = world.my_slice(chunks)
        if world.rank == 0:   # the parts still to compute, then the file they become: refuse now if they cannot fit
            cache_bytes = estimated_bytes({s: len(r) for s, r in splits.items()}, data.num_classes, cfg.dtype, cfg.topk)
            todo = sum((hi - lo) * data.num_classes * 4 for split, i, lo, hi in chunks
                       if not parts.path(split, i).is_file())
            need_space(cfg.out, todo + cache_bytes)
        # One bar per rank, counted in images (resumed chunks count at once), with rate and ETA.
        with tqdm(total=sum(hi - lo for _, _, lo, hi in mine), desc=f"teacher pass (rank {world.rank})"
                  if world.size > 1 else "teacher pass", unit="img", unit_scale=True, file=sys.stderr,
                  disable=not progress, leave=False, mininterval=1.0) as bar:
            for split, i, lo, hi in mine:
                if not parts.ready(split, i):        # missing, or damaged and removed: computed (again)
                    def check(out, start, stop, split=split, lo=lo):   # every batch, before it is kept
                        check_batch_output(teacher.name, out, (lo + start, lo + stop), split, data.num_classes)
                    logits = predict(model, splits[split].images(lo, hi), cfg.batch_size, amp=amp, check=check)
                    parts.save(split, i, logits.numpy())
                    computed += hi - lo
                bar.set_postfix(split=split, refresh=False)
                bar.update(hi - lo)
        world.barrier()                                 # every shard is on disk
        if world.rank == 0:
            test_logits = np.concatenate([parts.load(split, i) for split, i, _, _ in chunks if split == "test"])
            # softcache's teacher records its test accuracy; a user's teacher is measured here.
            attrs["teacher_test_acc"] = (teacher.test_acc if teacher.test_acc is not None
                                         else float((test_logits.argmax(1) == data.y_test).mean()))
            if fresh:
                attrs["pass_seconds"] = time.perf_counter() - start
            with write_cache(cfg.out, rows={s: len(rows) for s, rows in splits.items()},
                             num_classes=data.num_classes, temperature=cfg.temperature,
                             attrs=attrs, dtype=cfg.dtype, topk=cfg.topk, temperatures=cfg.temperatures) as writer:
                for split, i, lo, hi in chunks:
                    rows = splits[split]
                    writer.write(split, lo, parts.load(split, i) / cfg.temperature, rows.labels(lo, hi),
                                 rows.index(lo, hi), rows.params(lo, hi), rows.mixing(lo, hi))
            shutil.rmtree(parts.dir)
        world.barrier()
    seconds = time.perf_counter() - start
    rows = {s: len(r) for s, r in splits.items()}
    return {"path": str(cfg.out), "seconds": seconds, "rows": rows, "rows_computed": computed,
            "rank": world.rank, "processes": world.size,
            "resumed_rows": sum(rows.values()) - computed,
            "images_per_second": sum(rows.values()) / seconds, "config": as_record(cfg),
            "transfer_labels_ignored": bool(transfer_attrs.get("transfer_labels_ignored"))}
