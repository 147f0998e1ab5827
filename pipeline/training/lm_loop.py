"""The training loop for causal language models: the sequence family's counterpart of
:class:`pipeline.training.loop.Trainer`, counted in optimiser steps rather than epochs.

Each step draws ``batch_size`` windows at random (with replacement, from a seeded generator, as
nanoGPT draws its batches), so a run is a number of steps whatever the corpus size, and its whole
state (weights, optimiser, one-cycle schedule, generator, steps done) fits in :meth:`LMTrainer.
state_dict`: a run saved every few hundred steps and killed resumes to the same weights.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pipeline.errors import UsageError

__all__ = ["LMTrainer", "next_token_loss", "bits_per_byte"]

# (logits (B, L, V), window ids (B, L + 1), window indices (B,)) -> scalar loss
LMLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def next_token_loss(logits: torch.Tensor, windows: torch.Tensor, _indices=None) -> torch.Tensor:
    """Cross-entropy of every position's next token, mean over B·L positions (nats)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


class LMTrainer:
    """A causal LM, AdamW, a one-cycle schedule over ``steps`` and the window-drawing generator."""

    def __init__(self, model: nn.Module, windows, *, steps: int, batch_size: int, lr: float, weight_decay: float,
                 seed: int):
        if len(windows) == 0:
            raise UsageError(f"the {windows.split} split holds no window of {windows.context + 1} tokens; use a "
                             f"larger corpus or a smaller CONTEXT")
        self.model, self.windows, self.steps, self.batch_size = model, windows, steps, batch_size
        self.device = next(model.parameters()).device
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=lr, total_steps=steps)
        self.steps_done = 0

    def train_steps(self, n: int, loss_fn: LMLossFn = next_token_loss, label: str = "lm",
                    progress: bool = True) -> dict:
        """Up to ``n`` more steps (never past ``steps``); their history entry: step, train_loss (mean), lr
        (at the start), seconds and tokens per second."""
        n = min(n, self.steps - self.steps_done)
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        total, start = torch.zeros((), dtype=torch.float64), time.perf_counter()
        with tqdm(range(n), desc=f"{label} steps {self.steps_done + 1}-{self.steps_done + n}/{self.steps}",
                  unit="step", file=sys.stderr, disable=not progress, leave=False, mininterval=1.0) as bar:
            for step in bar:
                idx = torch.randint(len(self.windows), (self.batch_size,), generator=self.generator)
                batch = self.windows.batch(idx.tolist()).to(self.device)
                loss = loss_fn(self.model(batch[:, :-1]).float(), batch, idx)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.schedule.step()
                total += loss.detach().double()
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=step == 0)
        if not torch.isfinite(total):
            raise UsageError(f"{label}: the training loss became NaN or Inf before step {self.steps_done + n}; "
                             f"the run was stopped and not saved as finished (check the learning rate and T)")
        self.steps_done += n
        seconds = time.perf_counter() - start
        return {"step": self.steps_done, "train_loss": float(total) / max(n, 1), "lr": lr, "seconds": seconds,
                "tokens_per_second": n * self.batch_size * self.windows.context / max(seconds, 1e-9)}

    def run(self, state, history: list[dict], score: Callable[[], float], loss_fn: LMLossFn = next_token_loss, *,
            every: int, label: str = "lm", progress: bool = True, on_eval=None) -> list[dict]:
        """Steps to the end, ``every`` at a time: each time the validation ``score`` (bits per byte) joins the
        history entry, ``on_eval`` sees it, and ``state`` (:class:`pipeline.training.resume.TrainingState`)
        saves the whole run, so a killed run resumes from there."""
        while self.steps_done < self.steps:
            entry = self.train_steps(every, loss_fn, label=label, progress=progress)
            entry["val_bits_per_byte"] = score()
            history.append(entry)
            if on_eval:
                on_eval(entry)
            if self.steps_done < self.steps:
                state.save(self, history)
        return history

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.steps_done = state["steps_done"]


@torch.no_grad()
def bits_per_byte(model: nn.Module, windows, byte_lengths, batch_size: int = 32, limit: int = 0) -> dict:
    """Bits per byte and per token of every window's next-token predictions (with ``limit``, of that many
    windows spread evenly over the split: the first ones are a few files, not the split): total bits over
    total UTF-8 bytes of the predicted tokens (``byte_lengths[id]``)."""
    windows.require()        # no window: no figure (never a "perfect" 0 bits)
    model.eval()
    lengths = torch.as_tensor(byte_lengths, dtype=torch.float64)
    device = next(model.parameters()).device
    picks = (np.arange(len(windows)) if not limit or limit >= len(windows)
             else np.linspace(0, len(windows) - 1, limit).round().astype(np.int64))
    nats = tokens = nbytes = 0.0
    for lo in range(0, len(picks), batch_size):
        batch = windows.batch(picks[lo: lo + batch_size].tolist()).to(device)
        targets = batch[:, 1:]
        logits = model(batch[:, :-1]).float()
        nats += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"))
        tokens += targets.numel()
        nbytes += float(lengths[targets.cpu()].sum())
    bits = nats / math.log(2)
    return {"bits_per_byte": bits / max(nbytes, 1.0), "bits_per_token": bits / max(tokens, 1.0),
            "tokens": int(tokens), "bytes": int(nbytes)}
