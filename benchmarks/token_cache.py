"""The per-token cache on real text: bytes per position against dense float32, and what the pass costs
against the bare teacher forward.

Corpus: FILES files of this machine's stdlib sources from the default corpus's train split (and a tenth
as many from val and test, first in name order), prepared with the byte tokenizer (V = 256) and with a byte-level BPE of 32,768 tokens
trained here on the whole train split. Teacher: the default LM teacher's architecture (lm-teacher,
context 128), seeded weights: storage and speed do not depend on what it learned. For each tokenizer:
the pass at k = 16, float16, grid T = 1 2 4 writes the cache; its file size per position is set against
V x 4 bytes (dense float32); the bare forward over the same windows, same batch, same threads, is timed
in the same run, once before the pass and once after it, and the ratio (the faster bare run's seconds /
pass seconds) is what the pass keeps of the teacher's speed: the faster of two is the stricter
comparison on a machine whose speed drifts.

Usage: python benchmarks/token_cache.py [--files 40] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import datetime as dt
import platform
import shutil
import tempfile
import time
from pathlib import Path

import click
import torch

from pipeline.config import TokenLogitsConfig
from pipeline.data.text import load_corpus, stdlib_root
from pipeline.data.tokenizers import BYTES, train_bpe
from pipeline.data.windows import TokenWindows, prepare_text
from pipeline.models import create_lm
from pipeline.teacher.lm_pass import write_token_logits
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.loop import set_threads


def _subset(tmp: Path, files: int) -> Path:
    corpus = load_corpus("stdlib")
    folder = tmp / "stdlib-subset"
    chosen = [*corpus.documents["train"][:files], *corpus.documents["val"][:max(1, files // 10)],
              *corpus.documents["test"][:max(1, files // 10)]]        # names keep their splits
    for name in chosen:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stdlib_root() / name, folder / name)
    return folder


@torch.no_grad()
def _bare_forward(model, text: Path, context: int, batch: int, device: str = "cpu") -> float:
    """Seconds for the teacher's forward over every window, as the pass runs it (bf16 autocast on a GPU)."""
    cuda = device.startswith("cuda")
    start = time.perf_counter()
    for split in ("train", "val", "test"):
        windows = TokenWindows(text, split, context)
        for lo in range(0, len(windows), batch):
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
                model(windows.batch(range(lo, min(lo + batch, len(windows)))).to(device)[:, :-1]).float()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


@click.command()
@click.option("--files", default=40, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda where there is a GPU")
def main(files: int, threads: int, device: str) -> None:
    set_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        subset = load_corpus(str(_subset(tmp, files)))
        bpe = train_bpe(load_corpus("stdlib"), 32768)
        for tokenizer in (BYTES, bpe):
            text = tmp / f"{tokenizer.name}.h5"
            prepare_text(subset, tokenizer, text)
            torch.manual_seed(0)
            model = create_lm("lm-teacher", vocab_size=tokenizer.vocab_size, context=128).eval()
            teacher = tmp / f"{tokenizer.name}-teacher.pt"
            save_checkpoint(teacher, kind="lm", arch="lm-teacher", model=model,
                            model_kwargs={"vocab_size": tokenizer.vocab_size, "context": 128}, config={}, metrics={})
            model = model.to(device)
            cfg = TokenLogitsConfig(teacher=teacher, text=text, out=tmp / f"{tokenizer.name}-cache.h5", topk=16,
                                    dtype="float16", temperatures=(1.0, 2.0, 4.0), batch_size=16, device=device,
                                    threads=threads)
            before = _bare_forward(model, text, 128, 16, device)
            summary = write_token_logits(cfg, progress=False)
            positions = sum(summary["windows"].values()) * 128
            per_position = cfg.out.stat().st_size / positions
            bare = min(before, _bare_forward(model, text, 128, 16, device))
            rows.append((tokenizer.name, tokenizer.vocab_size, positions, per_position,
                         per_position / (tokenizer.vocab_size * 4), bare / summary["seconds"]))
    print("## Per-token cache: storage and pass speed on real text (`benchmarks/token_cache.py`)\n")
    where = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(f"Machine: {platform.processor() or platform.machine()}, {threads} torch threads, {where}. Date: "
          f"{dt.date.today()}. Command: `python benchmarks/token_cache.py --files {files} --threads {threads}"
          f"{'' if device == 'cpu' else f' --device {device}'}`.\n")
    print(f"Text: the first {files} files of the stdlib corpus's train split and {max(1, files // 10)} each of val "
          f"and test; teacher lm-teacher (context 128, "
          f"seeded weights); cache k = 16, float16, grid T = 1 2 4; windows of all three splits.\n")
    print("| tokenizer | V | positions | cache bytes / position | vs dense float32 | pass speed / bare forward |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, vocab, positions, per_position, ratio, speed in rows:
        print(f"| {name} | {vocab:,} | {positions:,} | {per_position:.1f} | {ratio:.4f} | {speed:.3f} |")


if __name__ == "__main__":
    main()
