"""A trained LM teacher, published: float16 weights committed under published/, with a record.

The default CPU teacher takes hours on 2 cores (minutes on a GPU), so a CPU-only user should not have to
train it. What is published is the teacher's weights, not its cache: the stdlib corpus differs between
Python builds (it is fingerprinted from this interpreter's own sources), so a cache made on one machine
fits only that Python, while the weights run on any corpus prepared with the same tokenizer. Files are
split by a seeded hash of their path, so a path the teacher never trained on lies in the validation or
test split on every Python build.

Its place is ``pipeline.names.published_lm_teacher``. The record says how it was made and what it scores: bits per byte on the validation and test splits,
re-measured with the float16 weights (what every reader loads), beside the figures as trained.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from pipeline.config import PublishLMTeacherConfig
from pipeline.data.windows import TokenWindows, read_text_attrs, text_tokenizer
from pipeline.errors import UsageError
from pipeline.files import write_json
from pipeline.models import count_params
from pipeline.training.checkpoint import load_checkpoint, round_to_half, save_checkpoint
from pipeline.training.lm_loop import bits_per_byte
from pipeline.training.loop import set_threads

__all__ = ["publish_lm_teacher"]

def publish_lm_teacher(cfg: PublishLMTeacherConfig) -> dict:
    """Round the teacher to float16, score it on the text's validation and test splits, and write the
    published weights and their record (refused over an existing one unless it is named in ``replace``)."""
    out = Path(cfg.out)
    if (out.exists() or out.is_symlink()) and cfg.replace != out.stem:
        raise UsageError(f"{out} is already published, and a published teacher is replaced only when asked by name: "
                         f"make publish REPUBLISH={out.stem} (softcache publish-lm-teacher --replace {out.stem})")
    set_threads(cfg.threads)
    model, ckpt = load_checkpoint(cfg.teacher, "lm", "teacher")
    attrs, trained = read_text_attrs(cfg.text), ckpt["metrics"]
    round_to_half(model)            # what save_checkpoint(half=True) stores, scored first
    lengths = text_tokenizer(cfg.text).byte_lengths()
    context = int(ckpt["model_kwargs"]["context"])
    scores = {split: bits_per_byte(model, TokenWindows(cfg.text, split, context), lengths) for split in ("val", "test")}
    steps = [h["step"] for h in trained.get("history", [])]
    record = {
        "command": cfg.command, "device": cfg.device, "note": cfg.note, "arch": ckpt["arch"],
        "params": count_params(model), "context": context,
        "steps": max(steps) if steps else None, "train_seconds": trained.get("train_seconds"),
        "val_bits_per_byte": scores["val"]["bits_per_byte"], "test_bits_per_byte": scores["test"]["bits_per_byte"],
        "test_bits_per_token": scores["test"]["bits_per_token"],
        "val_bits_per_byte_as_trained": trained.get("val_bits_per_byte"),
        "test_bits_per_byte_as_trained": trained.get("test_bits_per_byte"),
        "text": {key: attrs[key] for key in ("corpus", "corpus_fingerprint", "python", "tokenizer",
                                             "tokenizer_fingerprint", "vocab_size", "fingerprint")},
        "source_fingerprint": ckpt["fingerprint"],
        "published": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    fingerprint = save_checkpoint(out, kind="lm", arch=ckpt["arch"], model=model, model_kwargs=ckpt["model_kwargs"],
                                  config=ckpt["config"], metrics={**trained, "published": record}, half=True)
    record.update(fingerprint=fingerprint, bytes=out.stat().st_size)
    write_json(out.with_suffix(".json"), record)
    return {**record, "path": str(out)}
