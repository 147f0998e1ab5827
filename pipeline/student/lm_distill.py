"""A causal language-model student trained on the CPU from a teacher's per-token cache.

The student reads the prepared text's train windows (the very windows the teacher pass scored, so the
cache's row i is window i's targets) and, per position, the loss of :func:`pipeline.losses.token_kd_loss`:
ALPHA·T²·KL over the cache's top-k plus one tail bucket, plus (1 − ALPHA)·the next token's cross-entropy;
ALPHA = 0 is scratch and never opens the cache's values. Like the LM teacher it is counted in optimiser
steps and saves its whole state every ``eval_every`` steps, so a killed run resumes to the same weights.
The run directory holds ``model.pt`` (kind "lm") and ``metrics.json``: test bits per byte and per token,
top-1 agreement with the teacher on the test windows, tokens per second, parameters, and the cache's
fingerprint.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from pipeline.cache.lm_format import grid_index, token_bytes_per_position
from pipeline.cache.lm_reader import TokenCache
from pipeline.config import LMStudentConfig, as_record
from pipeline.data.windows import TokenWindows, read_text_attrs, text_tokenizer
from pipeline.errors import UsageError
from pipeline.files import exclusive_writer
from pipeline.losses import token_kd_loss
from pipeline.models import count_params, create_lm, student_build_record
from pipeline.models.hf_lm import HFCausalLM, reload_difference, save_hf_folder
from pipeline.names import SELF_METHOD_RECORD
from pipeline.student.pskd import alpha_schedule, token_pskd_loss
from pipeline.training.history import EpochLog
from pipeline.training.lm_loop import LMTrainer, bits_per_byte, next_token_loss
from pipeline.training.loop import set_threads
from pipeline.training.resume import TrainingState, recipe_key
from pipeline.training.run_dir import save_run

__all__ = ["train_lm_student", "teacher_agreement", "HF_FOLDER"]

HF_FOLDER = "hf"      # in a transformers student's run: the folder AutoModelForCausalLM.from_pretrained loads


def _open_cache(cfg: LMStudentConfig) -> tuple[TokenCache, dict]:
    """The cache, checked against the text it must come from, and the text's attributes."""
    text = read_text_attrs(cfg.text)
    in_memory = Path(cfg.cache).is_file() and Path(cfg.cache).stat().st_size <= cfg.cache_memory_mb << 20
    cache = TokenCache(cfg.cache, expect={"text_fingerprint": text["fingerprint"]}, in_memory=in_memory and cfg.alpha > 0)
    if cfg.alpha:
        grid_index(cache.temperatures, cfg.T)          # a T off the grid: one line naming it, before training
    held = int(cache.attrs["topk"]) or int(cache.attrs["vocab_size"])
    if cfg.topk > held:      # reading more than it holds would be a student told it learned what it did not
        raise UsageError(f"--topk {cfg.topk} asks for more of each position's distribution than the cache "
                         f"{cfg.cache} holds (its {held} most likely tokens); give --topk {held} or less, or make a "
                         f"cache with CACHE_TOPK={cfg.topk}", fix="token-logits")
    return cache, text


def cache_bytes_per_position(cache: TokenCache, topk: int = 0) -> float:
    """What the targets a run reads take on disk per position: the cache's own, or what a cache written at
    ``topk`` would take (the price of sparsity, set beside what it buys)."""
    vocab, held = int(cache.attrs["vocab_size"]), int(cache.attrs["topk"])
    return float(token_bytes_per_position(vocab, topk if topk and (not held or topk < held) else held,
                                          str(cache.attrs["dtype"]), len(cache.temperatures)))


def teacher_agreement(model, windows: TokenWindows, cache: TokenCache, batch_size: int = 32) -> float:
    """How often the student's most likely next token is the teacher's (the cache's first top-k id, or the
    dense row's argmax), over every window of ``windows``' split."""
    model.eval()
    same = total = 0
    with torch.no_grad():
        for lo in range(0, len(windows), batch_size):
            rows = list(range(lo, min(lo + batch_size, len(windows))))
            ids, log_p, _ = cache.targets(windows.split, rows, 1.0 if 1.0 in cache.temperatures else cache.temperatures[0])
            teacher = (log_p.argmax(-1) if ids is None else ids.gather(-1, log_p.argmax(-1, keepdim=True))[..., 0])
            student = model(windows.batch(rows)[:, :-1]).argmax(-1)
            same += int((student == teacher).sum())
            total += teacher.numel()
    return same / max(total, 1)


class _PreviousState:
    """PS-KD for a language model (:mod:`pipeline.student.pskd`): every ``eval_every`` steps is an epoch, and the
    student's state at the start of the current one (what its resume file holds) teaches it; the first trains
    on the next tokens alone."""

    def __init__(self, model, trainer: LMTrainer, cfg: LMStudentConfig):
        self.model, self.trainer, self.cfg = model, trainer, cfg
        self.epochs = math.ceil(cfg.steps / cfg.eval_every)
        self.copy, self.at = None, -1

    def loss(self, logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        done = self.trainer.steps_done            # fixed within an epoch: the trainer counts whole epochs
        epoch = done // self.cfg.eval_every + 1
        if epoch == 1:
            return next_token_loss(logits, batch)
        if self.at != done:
            self.copy, self.at = copy.deepcopy(self.model).eval().requires_grad_(False), done
        with torch.no_grad():
            previous = self.copy(batch[:, :-1])
        return token_pskd_loss(logits, batch[:, 1:], previous, alpha_schedule(self.cfg.self_alpha_T, epoch, self.epochs))


def train_lm_student(cfg: LMStudentConfig, progress: bool = True, on_eval=None) -> dict:
    """Train (or resume) one student and write its run directory; return its metrics. ``on_eval(entry)``
    sees each history entry (steps, loss, tokens per second, validation bits per byte) as it is made."""
    set_threads(cfg.threads)
    cache, text = _open_cache(cfg)
    context = int(cache.attrs["context"])
    train, val, test = (TokenWindows(cfg.text, split, context).require() for split in ("train", "val", "test"))
    if len(train) != cache.windows("train"):
        raise UsageError(f"{cfg.text} holds {len(train)} train windows of {context} tokens but the cache {cfg.cache} "
                         f"{cache.windows('train')}; give the text the cache was made from")
    tokenizer = text_tokenizer(cfg.text)
    lengths = tokenizer.byte_lengths()
    torch.manual_seed(cfg.seed)
    model = create_lm(cfg.student, vocab_size=int(cache.attrs["vocab_size"]), context=context,
                      tokenizer_fingerprint=text["tokenizer_fingerprint"])
    trainer = LMTrainer(model, train, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                        weight_decay=cfg.weight_decay, seed=cfg.seed)

    previous = _PreviousState(model, trainer, cfg)

    def loss(logits: torch.Tensor, batch: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if cfg.self_alpha_T:
            return previous.loss(logits, batch)
        if not cfg.alpha:
            return next_token_loss(logits, batch)
        ids, log_p, log_tail = cache.targets("train", idx.numpy(), cfg.T, cfg.topk)
        return token_kd_loss(logits, batch[:, 1:], ids, log_p, log_tail, T=cfg.T, alpha=cfg.alpha)

    with exclusive_writer(cfg.out_dir, what="student run"):
        key = recipe_key(as_record(cfg), ("cache", "text", "out_dir", "threads", "cache_memory_mb", "tensorboard_dir"),
                         text_fingerprint=text["fingerprint"],
                         cache_fingerprint=cache.fingerprint if cfg.alpha else "")
        state = TrainingState(Path(cfg.out_dir), key)
        history, _ = state.restore(trainer)
        resumed_from = trainer.steps_done
        with EpochLog(cfg.tensorboard_dir, Path(cfg.out_dir).name, step="step") as log:
            def seen(entry: dict) -> None:
                log.write(entry)
                if on_eval:
                    on_eval(entry)
            trainer.run(state, history, lambda: bits_per_byte(model, val, lengths, limit=cfg.eval_windows)["bits_per_byte"],
                        loss, every=cfg.eval_every, label=cfg.student, progress=progress, on_eval=seen)
        scores = {split: bits_per_byte(model, w, lengths) for split, w in (("val", val), ("test", test))}
        seconds = sum(h["seconds"] for h in history)
        metrics = {
            "kind": "lm", "student": cfg.student, "T": cfg.T, "alpha": cfg.alpha, "seed": cfg.seed, "steps": cfg.steps,
            **({"method": SELF_METHOD_RECORD["pskd"], "alpha_T": cfg.self_alpha_T} if cfg.self_alpha_T else {}),
            "topk": cfg.topk or int(cache.attrs["topk"]) or int(cache.attrs["vocab_size"]),
            "cache_bytes_per_position": cache_bytes_per_position(cache, cfg.topk),
            "val_bits_per_byte": scores["val"]["bits_per_byte"], "test_bits_per_byte": scores["test"]["bits_per_byte"],
            "test_bits_per_token": scores["test"]["bits_per_token"],
            "teacher_agreement": teacher_agreement(model, test, cache),
            **{f"teacher_{split}_bits_per_byte": float(cache.attrs.get(f"teacher_{split}_bits_per_byte", float("nan")))
               for split in ("val", "test")},
            "params": count_params(model), "train_seconds": seconds,
            "tokens_per_second": sum(h["tokens_per_second"] * h["seconds"] for h in history) / max(seconds, 1e-9),
            "cache": str(cfg.cache), "text": str(cfg.text), "cache_fingerprint": cache.fingerprint,
            "text_fingerprint": text["fingerprint"],
            # who taught it: what the report groups by, so runs of two teachers are never seeds of one arm
            "teacher": str(cache.attrs.get("teacher", "")), "teacher_fingerprint": str(cache.attrs["teacher_fingerprint"]),
            "tokenizer": text["tokenizer"], "tokenizer_fingerprint": text["tokenizer_fingerprint"], "history": history, "resumed_from_step": resumed_from,
            "threads": torch.get_num_threads(),
        }
        build = {"vocab_size": int(cache.attrs["vocab_size"]), "context": context, **student_build_record(cfg.student)}
        write_folder = None
        if isinstance(model, HFCausalLM):      # the run also holds the folder transformers loads, proved equal
            build["hf_config"] = model.model.config.to_dict()
            definition = tokenizer.definition

            def write_folder(run: Path) -> None:
                save_hf_folder(model, run / HF_FOLDER, definition)
                ids = test.batch(list(range(min(4, len(test)))))[:, :-1]
                metrics["hf_folder"] = {"path": HF_FOLDER, "tokenizer": bool(definition),
                                        "reload_max_abs_diff": reload_difference(run / HF_FOLDER, model, ids)}
        save_run(Path(cfg.out_dir), cfg.student, model, build, as_record(cfg), metrics, kind="lm",
                 write_extra=write_folder)
        state.clear()
    return metrics
