"""Training the teacher: the one expensive model, trained once per dataset and setting.

On a CPU a teacher trains for an hour or more, longer than a session may last, so it saves its
whole training state after every epoch and a killed run continues from there with the same
command (``pipeline.training.resume``, the mechanism student runs and self-distillation use)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.config import TeacherConfig, as_record
from pipeline.data.image_store import torch_images
from pipeline.data.prepare import load_prepared
from pipeline.files import write_json
from pipeline.models import count_params
from pipeline.names import TEACHER_CHECKPOINT, TEACHER_RECORD
from pipeline.provenance import code_version
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.history import EpochLog
from pipeline.training.loop import Trainer, accuracy, predict, say_epoch, set_threads
from pipeline.training.resume import TrainingState, recipe_key
from pipeline.training.run_dir import build_teacher

__all__ = ["train_teacher"]


def train_teacher(cfg: TeacherConfig, progress: bool = True) -> dict:
    """Train, evaluate on the test split, write teacher.pt and teacher.json; return the record."""
    cfg = cfg.resolved()
    set_threads(cfg.threads)
    data = load_prepared(cfg.dataset)
    device = torch.device(cfg.device)
    model, model_kwargs = build_teacher(cfg.arch, data, cfg.seed)
    model = model.to(device)

    x = torch_images(data.x_train, device)
    y = torch.from_numpy(data.y_train).to(device)
    x_test, y_test = torch_images(data.x_test), torch.from_numpy(data.y_test)

    trainer = Trainer(model, len(x), epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, seed=cfg.seed, augment=cfg.augment, amp=cfg.amp)
    # What a saved state must match: the recipe and the data, not where it is written or how many threads run it.
    state = TrainingState(Path(cfg.out_dir), recipe_key(as_record(cfg), ("dataset", "out_dir", "threads",
                                                                         "tensorboard_dir"),
                                                        dataset_fingerprint=data.fingerprint))
    history, _ = state.restore(trainer)        # [] unless a killed run of this very recipe left its state
    resumed_from = trainer.epochs_done
    with EpochLog(cfg.tensorboard_dir, f"teacher-{Path(cfg.out_dir).name}") as log:
        while trainer.epochs_done < cfg.epochs:
            entry = trainer.train_epoch(x, lambda logits, idx: F.cross_entropy(logits, y[idx]),
                                        f"teacher {cfg.arch}", progress)
            entry["test_acc"] = accuracy(predict(model, x_test, amp=cfg.amp), y_test)
            history.append(entry)
            log.write(entry)
            say_epoch(f"teacher {cfg.arch}", entry, cfg.epochs, progress)
            if state.due(trainer.epochs_done, cfg.epochs):
                state.save(trainer, history)
    train_seconds = sum(h["seconds"] for h in history)    # training only, not the per-epoch scoring
    test_acc = history[-1]["test_acc"]

    metrics = {
        "test_acc": test_acc,
        "params": count_params(model),
        "train_seconds": train_seconds,
        "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
        "history": history,
        "resumed_from_epoch": resumed_from,
        "device": cfg.device,
        "device_name": torch.cuda.get_device_name() if cfg.device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        **code_version(),
    }
    out = Path(cfg.out_dir)
    fingerprint = save_checkpoint(out / TEACHER_CHECKPOINT, kind="teacher", arch=cfg.arch, model=model.cpu(),
                                  model_kwargs=model_kwargs, config=as_record(cfg), metrics=metrics)
    record = {"arch": cfg.arch, "fingerprint": fingerprint, "dataset_fingerprint": data.fingerprint,
              "config": as_record(cfg), **metrics}
    write_json(out / TEACHER_RECORD, record)
    state.clear()
    return record
