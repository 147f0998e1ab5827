"""Per-epoch history beyond metrics.json: optional TensorBoard event files (``LOG=tensorboard``).

Every run keeps its history in its own files anyway (``metrics.json`` / ``teacher.json``);
this writes the same entries as TensorBoard scalars, one event directory per run under the
directory given (``DATA_DIR/tensorboard/<run>``), so ``tensorboard --logdir data/tensorboard``
compares runs live while they train.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UsageError

__all__ = ["EpochLog"]


class EpochLog:
    """Writes each history entry's numeric figures as scalars at its ``step`` (the epoch, or an LM run's
    optimiser step); does nothing without a directory."""

    def __init__(self, root: Path | None, run: str, step: str = "epoch"):
        self._writer, self._step = None, step
        if root is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("LOG=tensorboard needs the tensorboard package: pip install 'softcache[tensorboard]', "
                             "or leave LOG unset") from None
        self._writer = SummaryWriter(log_dir=str(Path(root) / run))

    def write(self, entry: dict) -> None:
        if self._writer is None:
            return
        for key, value in entry.items():
            if key != self._step and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, global_step=entry[self._step])
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "EpochLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
