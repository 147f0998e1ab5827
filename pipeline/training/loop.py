"""One training loop for teachers and students (nanoGPT-style: short loop, named helpers).

What differs between a teacher and a student is only the loss, so :func:`fit` takes a
``loss_fn(logits, idx)`` that sees the batch's row indices: the teacher's closure looks
up hard labels, the student's looks up hard labels and cached soft targets. Images stay
uint8 on the device and are scaled per batch, which keeps 60k Fashion-MNIST images at
47 MB instead of 188 MB.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.augment import DEFAULT_PAD, apply_views, random_view_params
from pipeline.errors import UsageError

__all__ = ["Trainer", "fit", "predict", "accuracy", "batches", "augment_batch", "to_unit_float", "set_threads",
           "say_epoch"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) -> float32 in [0, 1], channels-last in memory.

    Channels-last lets oneDNN's convolutions skip layout conversions: about 20% faster
    per training step for our CNNs on 2 CPU cores. The values and shape are unchanged.
    """
    return x.float().div_(255.0).contiguous(memory_format=torch.channels_last)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def batches(rows: int | torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Row indices of one shuffled epoch, in batches (the last one may be short).
    ``rows``: a count (rows 0..n-1) or the dataset rows to train on (a held-out split leaves some out)."""
    if isinstance(rows, int):
        yield from torch.randperm(rows, generator=generator).split(batch_size)
    else:
        yield from rows[torch.randperm(len(rows), generator=generator)].split(batch_size)


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = DEFAULT_PAD) -> torch.Tensor:
    """Random crop after zero-padding by ``pad`` pixels, and a random horizontal flip.

    x: (B, C, H, W). Offsets and flips are drawn from ``generator`` on the CPU, so a seed
    fixes them whatever the device; :mod:`pipeline.augment` applies them, the same way it
    applies the views cached by the teacher pass.
    """
    return apply_views(x, random_view_params(len(x), generator, pad), pad)


CPU_INFERENCE_BATCH, GPU_INFERENCE_BATCH = 64, 1024


def inference_batch(device: torch.device | str) -> int:
    """Rows per forward when no gradient is needed. A CPU is fastest on small batches, whose activations stay
    in its caches: at 64 rows against 1024, on 2 threads, the cnn teacher ran 1.9x, resnet18 1.5x and cnn-tiny
    1.4x (28x28) to 2.6x (64x64 RGB) as fast (benchmarks/inference_batch.py). A GPU wants large batches."""
    return GPU_INFERENCE_BATCH if torch.device(device).type == "cuda" else CPU_INFERENCE_BATCH


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 0, amp: bool = False,
            check: Callable[[object, int, int], None] | None = None) -> torch.Tensor:
    """Eval-mode logits for uint8 images x (N, C, H, W) on the model's device: (N, K) float32 on the CPU.
    ``batch_size`` 0: the device's :func:`inference_batch`. ``check(output, start, stop)`` sees each batch's
    raw output first (a user's teacher may return anything), and raises to stop."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch_size = batch_size or inference_batch(device)
    out = []
    for start in range(0, len(x), batch_size):
        xb = to_unit_float(x[start:start + batch_size].to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y = model(xb)
        if check is not None:
            check(y, start, start + len(xb))
        out.append(y.float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def say_epoch(label: str, entry: dict, epochs: int, progress: bool) -> None:
    """One line per finished epoch (loss, accuracy, time), printed above any live progress bar."""
    if progress:
        scores = "".join(f", {name.replace('_acc', '')} {100 * entry[name]:.2f}%" for name in ("val_acc", "test_acc")
                         if name in entry)
        tqdm.write(f"{label} epoch {entry['epoch']}/{epochs}: train loss {entry['train_loss']:.4f}{scores}, "
                   f"{entry['seconds']:.1f} s", file=sys.stderr)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


class Trainer:
    """Model, optimiser, one-cycle schedule and the random stream of one training run,
    advanced one epoch at a time. Its whole state fits in :meth:`state_dict`, so a run
    that saves it after every epoch can be killed and resumed to the same result
    (self-distillation does; see ``pipeline.student.self_distill``)."""

    def __init__(self, model: nn.Module, rows: int | torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                 weight_decay: float, seed: int, augment: bool, amp: bool = False):
        self.model = model.to(memory_format=torch.channels_last)
        self.device = next(model.parameters()).device
        self.rows, self.epochs, self.batch_size, self.augment, self.amp = rows, epochs, batch_size, augment, amp
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_per_epoch = -(-(rows if isinstance(rows, int) else len(rows)) // batch_size)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=lr,
                                                            total_steps=epochs * self.steps_per_epoch)
        self.epochs_done = 0

    def inputs(self, x_train: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The float batch the model trains on for rows ``idx``: scaled, and cropped and flipped (drawn
        from this trainer's random stream) when it augments. A method that runs the model on more rows
        than the batch's own (CS-KD's same-class partners) builds them here too."""
        xb = to_unit_float(x_train[idx].to(self.device, non_blocking=True))   # on-disk rows: to the device
        return to_channels_last(augment_batch(xb, self.generator)) if self.augment else xb

    def train_epoch(self, x_train: torch.Tensor, loss_fn: LossFn, label: str = "train",
                    progress: bool = True, forward: Callable[[torch.Tensor], object] | None = None) -> dict:
        """One pass over the training rows; returns its history entry: epoch, train_loss (the mean
        over its batches), lr (at its start) and seconds. x_train: uint8 (N, C, H, W) on the model's
        device, or anything indexed the same way (:class:`pipeline.augment.ReplayedViews`).
        ``forward(batch)``: what the loss sees instead of the model's logits (a model with auxiliary
        heads returns them all); ``loss_fn`` then gets that output as it is."""
        model = self.model
        model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        total, count = torch.zeros((), dtype=torch.float64), 0
        start = time.perf_counter()
        # tqdm renders in terminals and notebooks alike and stays silent when progress is off.
        with tqdm(batches(self.rows, self.batch_size, self.generator), total=self.steps_per_epoch,
                  desc=f"{label} epoch {self.epochs_done + 1}/{self.epochs}", unit="batch", file=sys.stderr,
                  disable=not progress, leave=False, mininterval=1.0) as bar:
            for step, idx in enumerate(bar):
                idx = idx.to(self.device)
                xb = self.inputs(x_train, idx)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    out = model(xb) if forward is None else forward(xb)
                loss = loss_fn(out.float() if forward is None else out, idx)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.schedule.step()
                total += loss.detach().double() * len(idx)
                count += len(idx)
                if step % 20 == 0:     # shown at once for the first batch, then with the bar's own updates
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=step == 0)
        if not torch.isfinite(total):
            # Checked once an epoch (a per-batch check would sync a GPU every step); the epoch is never
            # saved, so a resumed run starts again from the last finite one.
            raise UsageError(f"{label}: the training loss became NaN or Inf in epoch {self.epochs_done + 1}; the run "
                             f"was stopped and not saved as finished (check T, the learning rate and the cache)")
        self.epochs_done += 1
        return {"epoch": self.epochs_done, "train_loss": float(total) / max(count, 1), "lr": lr,
                "seconds": time.perf_counter() - start}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.epochs_done = state["epochs_done"]


def fit(model: nn.Module, x_train: torch.Tensor, loss_fn: LossFn, *, epochs: int, batch_size: int,
        lr: float, weight_decay: float, seed: int, augment: bool, amp: bool = False,
        label: str = "train", progress: bool = True,
        after_epoch: Callable[[dict], dict] | None = None) -> list[dict]:
    """Train ``model`` in place with AdamW and a one-cycle schedule; return the per-epoch history.

    x_train: (N, C, H, W) uint8 on the model's device. ``loss_fn(logits, idx)`` gets the
    batch's logits (B, K) and its row indices (B,) on the same device. ``after_epoch()`` may
    score the model (e.g. test accuracy): it gets the epoch's training entry and returns the whole entry.
    """
    trainer = Trainer(model, len(x_train), epochs=epochs, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, seed=seed, augment=augment, amp=amp)
    history = []
    for _ in range(epochs):
        entry = trainer.train_epoch(x_train, loss_fn, label, progress)
        history.append(after_epoch(entry) if after_epoch else entry)
    return history
