"""Resumable training runs: the whole training state, saved atomically beside the run directory.

A run killed at any instant (kill -9, a session limit, a full disk) must not start again
from zero. While it trains, a run keeps ``.<run>.resume/state.pt`` next to where its
directory will appear. That file holds the :class:`pipeline.training.loop.Trainer` state (weights,
optimiser, schedule, batch-order and augmentation generator, epochs done), torch's global
generator, the history so far, and a *key*: everything that shapes the result (the
recipe and the fingerprints of what it reads). The same command run again finds the state
and continues from it when its key matches. A state with another key (another recipe,
cache or dataset under the same run name) is never continued, and never silently thrown
away either: the run is refused in one line that names the state to delete. On the CPU with
the same threads, a resumed run ends with the same weights as an uninterrupted one.
The state is written after an epoch, every ``every`` epochs and whenever ``minutes`` have
passed, through a temporary file and a rename, so it is always whole. It is removed when the
finished run directory is in place. Self-distillation and student runs share this.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from pipeline.errors import UsageError
from pipeline.files import atomic_path, disk_full_is_one_line, refuse_link, working_dir

__all__ = ["resume_dir", "recipe_key", "TrainingState"]

STATE_FILE = "state.pt"


def resume_dir(out_dir: Path) -> Path:
    """Where a run's state lives while it trains: hidden beside the run, so reports never list it."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.resume"


def recipe_key(record: dict, leave_out: tuple[str, ...], **fingerprints: str) -> dict:
    """What a saved state must match to be continued: a run's config ``record`` (``as_record``) less the fields
    ``leave_out`` that do not shape its result (paths, threads, save cadence), plus the fingerprints of what
    it reads in place of their paths."""
    return {**{k: v for k, v in record.items() if k not in leave_out}, **fingerprints}


class TrainingState:
    """The saved state of one run, keyed by what shapes its result."""

    def __init__(self, out_dir: Path, key: dict, *, every: int = 1, minutes: float = 0.0):
        self.dir = resume_dir(out_dir)
        self.file = self.dir / STATE_FILE
        self.key, self.every, self.minutes = key, max(1, every), minutes
        self._saved_at = time.monotonic()

    def restore(self, trainer) -> tuple[list[dict], dict]:
        """Load a matching state into ``trainer``; return (history, extra) saved with it, or ([], {})
        when there is none. A state of another recipe, cache or dataset is refused."""
        refuse_link(self.dir), refuse_link(self.file)
        if self.file.is_file():
            try:
                state = torch.load(self.file, map_location="cpu", weights_only=True)
            except Exception:   # a state torch cannot read (a torn write is impossible; a torn disk is not)
                state = None
            if state is not None and state.get("key") == self.key:
                trainer.load_state_dict(state["trainer"])
                torch.set_rng_state(state["torch_rng"])
                self._saved_at = time.monotonic()
                return list(state["history"]), dict(state.get("extra", {}))
            differs = ("is unreadable" if state is None
                       else f"was saved by another {_what_differs(state.get('key', {}), self.key)}")
            raise UsageError(f"the saved state of this run {self.dir} {differs}, so it cannot be continued; "
                             f"delete it (rm -r {self.dir}) to train this run afresh")
        refuse_link(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)    # a state dir without its file holds nothing to keep
        working_dir(self.dir)
        return [], {}

    def due(self, epoch: int, last: int) -> bool:
        """Save after this epoch? Every ``every`` epochs, when ``minutes`` have passed, never after the last
        (the finished run directory is written then instead)."""
        if epoch >= last:
            return False
        overdue = self.minutes > 0 and time.monotonic() - self._saved_at >= 60 * self.minutes
        return epoch % self.every == 0 or overdue

    def save(self, trainer, history: list[dict], extra: dict | None = None) -> None:
        with disk_full_is_one_line(self.file, 1 << 20), atomic_path(self.file) as tmp:
            torch.save({"key": self.key, "trainer": trainer.state_dict(), "torch_rng": torch.get_rng_state(),
                        "history": history, "extra": extra or {}}, tmp)
        self._saved_at = time.monotonic()

    def clear(self) -> None:
        if not self.dir.is_symlink():
            shutil.rmtree(self.dir, ignore_errors=True)


def _what_differs(saved: dict, wanted: dict) -> str:
    """'cache (cache_fingerprint)' or 'recipe (epochs, T)': what a stale state was made with."""
    changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    kind = ("cache" if any("cache" in k for k in changed) else "dataset" if any("dataset" in k for k in changed)
            else "recipe")
    return f"{kind} ({', '.join(changed)})"
