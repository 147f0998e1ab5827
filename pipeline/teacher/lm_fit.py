"""Train a causal language model as a teacher for LM students, once, resumably.

A teacher is worth caching only if it is clearly better than where its students are going: on the CPU
a small Transformer barely beats a count-based n-gram model (docs/RESULTS.md), so the default teacher
(``lm-teacher``, about 6M parameters) is meant to train for long, in the background across sessions or
on a GPU when there is one. Every ``eval_every`` steps it is scored in bits per byte on validation
windows and its whole state is saved; the same command resumes a killed run. The finished teacher is a
checkpoint (kind ``lm``) and a record: bits per byte on the validation and test splits, tokens per
second, and the fingerprints of the text, its tokenizer and the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.config import LMTeacherConfig, as_record
from pipeline.data.windows import TokenWindows, read_text_attrs, text_tokenizer
from pipeline.files import write_json
from pipeline.models import count_params, create_lm
from pipeline.names import TEACHER_CHECKPOINT, TEACHER_RECORD
from pipeline.provenance import code_version
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.lm_loop import LMTrainer, bits_per_byte
from pipeline.training.loop import set_threads
from pipeline.training.resume import TrainingState, recipe_key

__all__ = ["train_lm_teacher"]


def train_lm_teacher(cfg: LMTeacherConfig, progress: bool = True, on_eval=None) -> dict:
    """Train (or resume), score, write teacher.pt and teacher.json; return the record. ``on_eval(entry)``
    sees each history entry as it is made (a log, a progress line)."""
    cfg = cfg.resolved()
    set_threads(cfg.threads)
    attrs, tokenizer = read_text_attrs(cfg.text), text_tokenizer(cfg.text)
    train, val, test = (TokenWindows(cfg.text, split, cfg.context).require() for split in ("train", "val", "test"))
    lengths = tokenizer.byte_lengths()
    torch.manual_seed(cfg.seed)
    model = create_lm(cfg.arch, vocab_size=tokenizer.vocab_size, context=cfg.context).to(cfg.device)
    trainer = LMTrainer(model, train, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                        weight_decay=cfg.weight_decay, seed=cfg.seed)
    # What a saved state must match: the recipe and the text, not where they live or how many threads run it.
    state = TrainingState(Path(cfg.out_dir), recipe_key(as_record(cfg), ("text", "out_dir", "threads"),
                                                        text_fingerprint=attrs["fingerprint"]))
    history, _ = state.restore(trainer)
    resumed_from = trainer.steps_done
    trainer.run(state, history, lambda: bits_per_byte(model, val, lengths, limit=cfg.eval_windows)["bits_per_byte"],
                every=cfg.eval_every, label=f"teacher {cfg.arch}", progress=progress, on_eval=on_eval)
    scores = {split: bits_per_byte(model, windows, lengths) for split, windows in (("val", val), ("test", test))}
    # the text it learned from, and so the tokenizer whose ids it reads: the token pass refuses any other
    provenance = {key: attrs[key] for key in ("fingerprint", "corpus", "corpus_fingerprint", "python", "tokenizer",
                                              "tokenizer_fingerprint", "vocab_size")}
    metrics = {
        "text": provenance,
        "val_bits_per_byte": scores["val"]["bits_per_byte"], "test_bits_per_byte": scores["test"]["bits_per_byte"],
        "test_bits_per_token": scores["test"]["bits_per_token"], "params": count_params(model),
        "train_seconds": sum(h["seconds"] for h in history),
        "tokens_per_second": sum(h["tokens_per_second"] * h["seconds"] for h in history)
        / max(sum(h["seconds"] for h in history), 1e-9),
        "history": history, "resumed_from_step": resumed_from, "device": cfg.device,
        "device_name": torch.cuda.get_device_name() if cfg.device == "cuda" else "cpu",
        "threads": torch.get_num_threads(), **code_version(),
    }
    out = Path(cfg.out_dir)
    fingerprint = save_checkpoint(out / TEACHER_CHECKPOINT, kind="lm", arch=cfg.arch, model=model.cpu(),
                                  model_kwargs={"vocab_size": tokenizer.vocab_size, "context": cfg.context},
                                  config=as_record(cfg), metrics=metrics)
    record = {"arch": cfg.arch, "fingerprint": fingerprint, "text": provenance, "config": as_record(cfg), **metrics}
    write_json(out / TEACHER_RECORD, record)
    state.clear()
    return record
