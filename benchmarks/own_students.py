"""What a student from outside softcache pays for the cache, as ratios measured side by side in one run.

1. A transformers student (the ``hf-llama-small`` preset, Llama-shaped, sized like ``lm-small``): its cached-KD
   step against its own cross-entropy step (floor: at most 1.10x), and against softcache's own ``lm-small``
   KD step at about the same parameter count (floor: at most 1.25x); ``lm-small``'s own KD/CE beside it. The text, the cache and the loss are
   those of ``benchmarks/lm_student_step.py``; the arms alternate, ROUNDS times, and medians are compared.
2. A timm student (``timm:mobilenetv3_small_050``): its KD-from-cache epoch against its cross-entropy epoch
   on ROWS Fashion-MNIST images (floor: at most 1.05x), as ``benchmarks/run_all.py`` measures softcache's own.

Usage: python benchmarks/own_students.py [--files 20] [--steps 20] [--rounds 3] [--rows 6000] [--threads 1]
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
import tempfile
from pathlib import Path

import click
import torch
from fixtures import dataset, untrained_teacher
from lm_student_step import bench_text_and_cache, kd_loss_of, seconds_per_step
from run_all import bench_student_epoch

from pipeline.cache.lm_reader import TokenCache
from pipeline.cache.reader import LogitCache
from pipeline.config import LogitsConfig
from pipeline.data.prepare import save_prepared
from pipeline.models import count_params, create_lm
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.training.lm_loop import next_token_loss
from pipeline.training.loop import set_threads

HF_STUDENT, OWN_STUDENT, TIMM_STUDENT = "hf-llama-small", "lm-small", "timm:mobilenetv3_small_050"


def _lm_steps(files: int, steps: int, rounds: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        text, cache_path = bench_text_and_cache(Path(tmp_name), files, threads)
        kd = kd_loss_of(TokenCache(cache_path, in_memory=True))
        arms = {(student, what): loss for student in (HF_STUDENT, OWN_STUDENT)
                for what, loss in (("ce", next_token_loss), ("kd", kd))}
        times: dict = {arm: [] for arm in arms}
        for _ in range(rounds):
            for (student, what), loss in arms.items():
                times[(student, what)].append(seconds_per_step(text, loss, steps, student))
    return {arm: statistics.median(t) for arm, t in times.items()}


def _timm_epoch(rows: int, repeats: int) -> dict:
    data = dataset(rows)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        save_prepared(data, tmp / "d.npz")
        teacher, ckpt = untrained_teacher(tmp)
        write_teacher_logits(LogitsConfig(teacher=ckpt, dataset=tmp / "d.npz", out=tmp / "c.h5", device="cpu"))
        return {**bench_student_epoch(data, LogitCache(tmp / "c.h5"), teacher, TIMM_STUDENT, repeats),
                "data": data.name}


@click.command()
@click.option("--files", default=20, show_default=True)
@click.option("--steps", default=20, show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--rows", default=6000, show_default=True, help="Fashion-MNIST training images for the timm epoch.")
@click.option("--threads", default=1, show_default=True)
def main(files: int, steps: int, rounds: int, rows: int, threads: int) -> None:
    set_threads(threads)
    step = _lm_steps(files, steps, rounds, threads)
    epoch = _timm_epoch(rows, rounds)
    params = {s: count_params(create_lm(s, vocab_size=256, context=128)) for s in (HF_STUDENT, OWN_STUDENT)}
    hf_kd, hf_ce = step[(HF_STUDENT, "kd")], step[(HF_STUDENT, "ce")]
    own_kd, own_ce = step[(OWN_STUDENT, "kd")], step[(OWN_STUDENT, "ce")]
    print("## Students from outside softcache: what the cache costs them (`benchmarks/own_students.py`)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {threads} torch thread(s), torch {torch.__version__}, "
          f"CPU. Date: {dt.date.today()}. Command: `python benchmarks/own_students.py --files {files} --steps {steps} "
          f"--rounds {rounds} --rows {rows} --threads {threads}`.\n")
    print(f"Text: {files} stdlib files as bytes, 32 windows of 128 a step, cache k = 16 float16 read at T = 2, "
          f"ALPHA = 0.5; median of {rounds} alternating rounds of {steps} steps.\n")
    print("| student | params | arm | ms / step | ratio | floor |")
    print("|---|---:|---|---:|---:|---|")
    print(f"| {HF_STUDENT} | {params[HF_STUDENT]:,} | cross-entropy | {1000 * hf_ce:.1f} | 1.000 | |")
    print(f"| {HF_STUDENT} | {params[HF_STUDENT]:,} | KD from the cache | {1000 * hf_kd:.1f} | {hf_kd / hf_ce:.3f} "
          f"of its CE | <= 1.10 |")
    print(f"| {OWN_STUDENT} | {params[OWN_STUDENT]:,} | cross-entropy | {1000 * own_ce:.1f} | 1.000 | |")
    print(f"| {OWN_STUDENT} | {params[OWN_STUDENT]:,} | KD from the cache | {1000 * own_kd:.1f} | {own_kd / own_ce:.3f} "
          f"of its CE | <= 1.10 |\n")
    print(f"The transformers student's KD step takes {hf_kd / own_kd:.3f}x softcache's own at about the same size "
          f"(floor: <= 1.25).\n")
    print(f"Images: {rows} {epoch['data']} training images, batch 128, best of {rounds} interleaved epochs.\n")
    print("| student | CE epoch (s) | KD-from-cache epoch (s) | ratio KD/CE | floor |")
    print("|---|---:|---:|---:|---|")
    print(f"| {TIMM_STUDENT} | {epoch['ce_s']:.2f} | {epoch['kd_s']:.2f} | {epoch['ratio']:.3f} | <= 1.05 |")


if __name__ == "__main__":
    main()
