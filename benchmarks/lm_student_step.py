"""What the cache costs an LM student: a cached-KD training step against a plain cross-entropy step of the
same student (the issue's floor: at most 1.10x at k = 16), and steps that read the targets from the file
against steps that read them from memory (floor: at least 0.9x the speed).

Text: FILES files of this machine's stdlib sources (bytes, V = 256), context 128. The cache comes from a
seeded lm-small used as the teacher (the step's cost does not depend on what the teacher learned), at
k = 16, float16, grid T = 1 2 4. Each arm trains a fresh lm-small for STEPS steps of 32 windows (the same
seed, so the same windows), after a few warm-up steps; the arms alternate, ROUNDS times, on one machine in
one run, and the medians of their seconds per step are compared.

Usage: python benchmarks/lm_student_step.py [--files 40] [--steps 30] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.token_cache import _subset  # noqa: E402  (the repository root, as run by make bench)
from pipeline.cache.lm_reader import TokenCache
from pipeline.config import TokenLogitsConfig
from pipeline.data.text import load_corpus
from pipeline.data.tokenizers import BYTES
from pipeline.data.windows import TokenWindows, prepare_text
from pipeline.losses import token_kd_loss
from pipeline.models import create_lm
from pipeline.teacher.lm_pass import write_token_logits
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.lm_loop import LMTrainer, next_token_loss
from pipeline.training.loop import set_threads


def seconds_per_step(text: Path, loss, steps: int, student: str = "lm-small") -> float:
    torch.manual_seed(0)
    trainer = LMTrainer(create_lm(student, vocab_size=256, context=128), TokenWindows(text, "train", 128),
                        steps=steps + 3, batch_size=32, lr=3e-3, weight_decay=0.1, seed=0)
    trainer.train_steps(3, loss, progress=False)                 # warm-up: allocations, first reads
    start = time.perf_counter()
    trainer.train_steps(steps, loss, progress=False)
    return (time.perf_counter() - start) / steps


def bench_text_and_cache(tmp: Path, files: int, threads: int) -> tuple[Path, Path]:
    """FILES stdlib files as bytes, and a k = 16 float16 cache of them from a seeded lm-small teacher."""
    text = tmp / "bytes.h5"
    prepare_text(load_corpus(str(_subset(tmp, files))), BYTES, text)
    torch.manual_seed(0)
    teacher = create_lm("lm-small", vocab_size=256, context=128)
    save_checkpoint(tmp / "teacher.pt", kind="lm", arch="lm-small", model=teacher,
                    model_kwargs={"vocab_size": 256, "context": 128}, config={}, metrics={})
    cfg = TokenLogitsConfig(teacher=tmp / "teacher.pt", text=text, out=tmp / "cache.h5", topk=16,
                            dtype="float16", temperatures=(1.0, 2.0, 4.0), device="cpu", threads=threads)
    write_token_logits(cfg, progress=False)
    return text, cfg.out


def kd_loss_of(cache: TokenCache):
    """The LM student stage's KD loss at T = 2, ALPHA = 0.5, reading ``cache``."""
    def loss(logits, batch, idx):
        ids, log_p, log_tail = cache.targets("train", idx.numpy(), 2.0)
        return token_kd_loss(logits, batch[:, 1:], ids, log_p, log_tail, T=2.0, alpha=0.5)
    return loss


@click.command()
@click.option("--files", default=40, show_default=True)
@click.option("--steps", default=30, show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--threads", default=2, show_default=True)
def main(files: int, steps: int, rounds: int, threads: int) -> None:
    set_threads(threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        text, cache = bench_text_and_cache(tmp, files, threads)
        on_disk, in_memory = TokenCache(cache), TokenCache(cache, in_memory=True)
        arms = {"cross-entropy": next_token_loss, "KD, cache in memory": kd_loss_of(in_memory),
                "KD, cache on disk": kd_loss_of(on_disk)}
        times = {name: [] for name in arms}
        for _ in range(rounds):
            for name, loss in arms.items():
                times[name].append(seconds_per_step(text, loss, steps))
    median = {name: statistics.median(t) for name, t in times.items()}
    print("## LM students: the cached-KD step, and the cache read from disk (`benchmarks/lm_student_step.py`)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {threads} torch threads, CPU. Date: {dt.date.today()}. "
          f"Command: `python benchmarks/lm_student_step.py --files {files} --steps {steps} --rounds {rounds} "
          f"--threads {threads}`.\n")
    print(f"Student lm-small, 32 windows of 128 bytes a step; cache k = 16, float16, read at T = 2, ALPHA = 0.5; "
          f"median of {rounds} alternating rounds of {steps} steps.\n")
    print("| arm | ms / step | vs cross-entropy | floor |")
    print("|---|---:|---:|---|")
    ce = median["cross-entropy"]
    for name, seconds in median.items():
        floor = {"KD, cache in memory": "<= 1.10x CE (the default wherever the cache fits in memory)"}.get(name, "")
        print(f"| {name} | {1000 * seconds:.1f} | {seconds / ce:.3f} | {floor} |")
    print(f"\nReading from disk runs at {median['KD, cache in memory'] / median['KD, cache on disk']:.3f}x the speed "
          f"of reading from memory (floor: >= 0.9).")


if __name__ == "__main__":
    main()
