"""The per-token teacher pass: a causal LM teacher (a softcache checkpoint, or a local Hugging Face folder)
over every window of a prepared text file, once,
written to a per-token cache (:mod:`pipeline.cache.lm_format`).

Like the image pass it is resumable and shardable: the windows of every split are cut into chunks of
``chunk_windows``; each finished chunk's targets are kept under ``.<cache>.parts/`` with a key (teacher,
text, context, top-k, storage, grid), so a killed pass resumes where it stopped and ``torchrun`` ranks
each compute their slice before rank 0 writes the one file. The teacher runs in eval mode, in float32 on
the CPU (bf16 autocast on a GPU), and its outputs are checked on every batch: as wide as its vocabulary,
and free of NaN and +inf (a -inf is a zero probability, kept in a top-k cache's tail). The targets are
computed where the logits are, so a GPU's pass copies k + G numbers per position to the host, not V.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline.cache.lm_format import (
    TOKEN_SPLITS,
    target_log_probs,
    targets_are_finite,
    token_bytes_per_position,
    token_targets,
    write_token_cache,
)
from pipeline.config import TokenLogitsConfig, as_record, resolve_device
from pipeline.data.windows import TokenWindows, read_text_attrs, text_tokenizer
from pipeline.errors import UsageError
from pipeline.files import exclusive_writer, need_space
from pipeline.teacher.hf_source import load_lm_teacher
from pipeline.teacher.pass_parts import Parts, World, parts_dir
from pipeline.training.checkpoint import recorded_tokenizer
from pipeline.training.loop import set_threads

__all__ = ["write_token_logits", "check_same_tokenizer"]


def check_same_tokenizer(ckpt: dict, outputs: int, tokenizer, teacher) -> None:
    """A teacher over ids of another tokenizer seals a complete, digest-proven cache of noise, so the text
    must be prepared with the teacher's own tokenizer: the same fingerprint where the teacher's is known; where
    it is not, a vocabulary exactly as wide as the teacher's output (nothing else can be checked)."""
    known = recorded_tokenizer(ckpt)
    if known and known != tokenizer.fingerprint:
        raise UsageError(f"the teacher {teacher} reads the ids of another tokenizer (fingerprint {known}) than the "
                         f"text's ({tokenizer.name}, {tokenizer.fingerprint}); prepare the text with the teacher's "
                         f"tokenizer (TOKENIZER=<its tokenizer.json>, or the TOKENIZER it was trained with)")
    if tokenizer.vocab_size > outputs:
        raise UsageError(f"the text's tokenizer ({tokenizer.name}) makes ids up to {tokenizer.vocab_size - 1}, past "
                         f"the teacher's {outputs} outputs; prepare the text with the teacher's tokenizer")
    if not known and tokenizer.vocab_size != outputs:
        raise UsageError(f"the teacher {teacher} has {outputs} outputs and records no tokenizer, and the text's "
                         f"tokenizer ({tokenizer.name}) has {tokenizer.vocab_size} ids: nothing proves they are one "
                         f"tokenizer; put the teacher's tokenizer.json in its folder and prepare the text with it")


def write_token_logits(cfg: TokenLogitsConfig, progress: bool = True) -> dict:
    """Run the teacher over train, val and test windows (resuming finished chunks) and write the cache."""
    set_threads(cfg.threads)
    world = World.from_environment(resolve_device(cfg.device))
    model, ckpt = load_lm_teacher(cfg.teacher)
    model = model.to(world.device).eval()
    text, tokenizer = read_text_attrs(cfg.text), text_tokenizer(cfg.text)
    context = cfg.context or model.context
    if context > model.context:
        raise UsageError(f"CONTEXT={context} is longer than the teacher's context of {model.context}; use "
                         f"CONTEXT={model.context} or less")
    check_same_tokenizer(ckpt, model.vocab_size, tokenizer, cfg.teacher)
    if not cfg.topk < model.vocab_size:
        raise UsageError(f"CACHE_TOPK must lie in [0, {model.vocab_size}) for the teacher's {model.vocab_size} "
                         f"outputs (0: dense), got {cfg.topk}")
    windows = {split: TokenWindows(cfg.text, split, context).require() for split in TOKEN_SPLITS}
    chunks = [(split, i, lo, min(lo + cfg.chunk_windows, len(w)))
              for split, w in windows.items() for i, lo in enumerate(range(0, len(w), cfg.chunk_windows))]
    key = {"teacher": ckpt["fingerprint"], "text": text["fingerprint"], "context": context, "topk": cfg.topk,
           "dtype": cfg.dtype, "temperatures": list(cfg.temperatures), "chunk_windows": cfg.chunk_windows,
           "batch_size": cfg.batch_size, "device": world.device.split(":")[0], "scores": "nats and bytes per window"}
    lengths = torch.as_tensor(tokenizer.byte_lengths(), dtype=torch.int64)
    amp = world.device.startswith("cuda")
    start, computed = time.perf_counter(), 0
    sizes = {(split, i): hi - lo for split, i, lo, hi in chunks}
    names = {"topk_logits", "topk_ids", "tail_odds"} if cfg.topk else {"logits"}

    def part_problem(split: str, i: int, block: dict) -> str | None:
        """What a finished chunk must be before it is sealed: its windows, every array, finite values, ids
        inside the vocabulary (Parts: a part that is not is computed again)."""
        want = sizes.get((split, i), -1)
        if set(block) != names | {"teacher_nats", "target_bytes"} or any(
                len(v) != want for v in block.values()) or any(block[n].shape[1] != context for n in names):
            return f"the part does not hold the {want} windows of {context} positions its chunk has"
        if not targets_are_finite({n: block[n] for n in names}) or not np.isfinite(block["teacher_nats"]).all():
            return "the part holds NaN or Inf"
        if cfg.topk and (block["topk_ids"].dtype.kind != "u" or block["topk_ids"].max(initial=0) >= model.vocab_size):
            return "the part holds ids outside the vocabulary"
        return None

    with world.session(), (exclusive_writer(cfg.out) if world.rank == 0 else contextlib.nullcontext()):
        if world.rank == 0:
            parts = Parts(parts_dir(cfg.out), key, suffix=".npz", check=part_problem)
            fresh = not any(parts.dir.glob("*.npz"))
        world.barrier()
        if world.rank != 0:
            parts = Parts(parts_dir(cfg.out), key, suffix=".npz", check=part_problem)
        mine = world.my_slice(chunks)
        if world.rank == 0:   # the parts still to compute, then the file they become: refuse now if they cannot fit
            per_window = context * token_bytes_per_position(model.vocab_size, cfg.topk, cfg.dtype, len(cfg.temperatures))
            todo = sum(hi - lo for split, i, lo, hi in chunks if not parts.path(split, i).is_file())
            need_space(cfg.out, (todo + sum(len(w) for w in windows.values())) * per_window)
        with tqdm(total=sum(hi - lo for _, _, lo, hi in mine), desc=f"token pass (rank {world.rank})",
                  unit="window", file=sys.stderr, disable=not progress, mininterval=1.0) as bar:
            for split, i, lo, hi in mine:
                if not parts.ready(split, i):        # missing, or damaged and removed: computed (again)
                    parts.save(split, i, _targets(model, windows[split], lo, hi, cfg, amp, lengths))
                    computed += hi - lo
                bar.update(hi - lo)
        world.barrier()
        if world.rank == 0:
            attrs = {"teacher": ckpt["arch"], "teacher_fingerprint": ckpt["fingerprint"],
                     "text_fingerprint": text["fingerprint"], "corpus": text["corpus"],
                     "corpus_fingerprint": text["corpus_fingerprint"], "python": text["python"],
                     "tokenizer": text["tokenizer"], "tokenizer_fingerprint": text["tokenizer_fingerprint"],
                     "stride": context, "producer": "softcache token pass", "device": world.device.split(":")[0]}
            if fresh:
                attrs["pass_seconds"] = time.perf_counter() - start
            with write_token_cache(cfg.out, windows={s: len(w) for s, w in windows.items()}, context=context,
                                   vocab_size=model.vocab_size, topk=cfg.topk, dtype=cfg.dtype,
                                   temperatures=cfg.temperatures, attrs=attrs) as writer:
                nats, nbytes = dict.fromkeys(windows, 0.0), dict.fromkeys(windows, 0)
                for split, i, _, _ in chunks:
                    block = parts.load(split, i)
                    nats[split] += float(block.pop("teacher_nats").sum())
                    nbytes[split] += int(block.pop("target_bytes").sum())
                    writer.write(split, block)
                # what the teacher scores on this text's own splits (the checkpoint's figure was on its own text)
                writer.f.attrs.update({f"teacher_{split}_bits_per_byte": nats[split] / math.log(2) / nbytes[split]
                                       for split in windows if nbytes[split]})
            shutil.rmtree(parts.dir)
        world.barrier()
    seconds = time.perf_counter() - start
    total = sum(len(w) for w in windows.values())
    return {"path": str(cfg.out), "seconds": seconds, "windows": {s: len(w) for s, w in windows.items()},
            "windows_computed": computed, "resumed_windows": total - computed, "rank": world.rank,
            "tokens_per_second": total * context / seconds, "config": as_record(cfg)}


@torch.no_grad()
def _targets(model, windows: TokenWindows, lo: int, hi: int, cfg: TokenLogitsConfig, amp: bool,
             lengths: torch.Tensor) -> dict:
    """The cache's arrays for windows [lo, hi), a batch of windows per teacher forward; and per window, the
    teacher's nats on the true next tokens and their bytes (``teacher_nats``, ``target_bytes``: summed into
    the cache's ``teacher_<split>_bits_per_byte``, not stored per window)."""
    blocks = []
    for start in range(lo, hi, cfg.batch_size):
        batch = windows.batch(range(start, min(start + cfg.batch_size, hi))).to(next(model.parameters()).device)
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch[:, :-1]).float()           # the targets are computed where the logits are
        where = (f"for windows {start}..{start + len(batch) - 1} of {windows.split}; the pass stopped and nothing "
                 "was marked complete")
        if logits.shape[-1] != model.vocab_size:
            raise UsageError(f"the teacher returned {tuple(logits.shape)} {where}")
        block = token_targets(logits, cfg.topk, cfg.temperatures)
        if not targets_are_finite(block):
            raise UsageError(f"the teacher returned non-finite values {where}")
        targets = batch[:, 1:]
        blocks.append({**block, "teacher_nats": _teacher_nats(logits, targets, block, cfg.temperatures).numpy(),
                       "target_bytes": lengths[targets.cpu()].sum(1).numpy()})
    return {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}


def _teacher_nats(logits: torch.Tensor, targets: torch.Tensor, block: dict, temperatures) -> torch.Tensor:
    """Per window (B,), on the host, the teacher's nats on the true next tokens. Where the grid holds T = 1,
    from what the block stores, read as the cache reads it: log p(true) = log p(argmax) + (z_true - z_max),
    with no second pass over the vocabulary (at V = 32,768 that pass costs half the targets' time); else
    cross-entropy over the logits."""
    if "tail_odds" in block and 1.0 in temperatures:
        ids, support, _ = target_log_probs(block, 1.0, temperatures)
        gap = (logits.gather(-1, targets[..., None]) - logits.gather(-1, ids[..., :1].to(logits.device)))[..., 0]
        return -(support[..., 0] + gap.cpu()).sum(1, dtype=torch.float64)
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return flat.view(targets.shape).sum(1, dtype=torch.float64).cpu()
