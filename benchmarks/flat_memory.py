"""Memory that stays flat: an image folder whose prepared array is larger than the memory the
stages may use, through the data stage, the teacher pass and a student epoch, each a real
softcache command run under an address-space limit (``resource.setrlimit(RLIMIT_AS)``: the
process cannot map more, so its resident memory cannot exceed it either).

Side by side, on a subset of the same folder that fits in memory, the same three steps
prepared as an .npz (every stage reads it whole) and as HDF5 (read a batch at a time), with
no limit; and the bare teacher forward over the subset's images as one in-memory tensor.

The folder: Fashion-MNIST images upscaled to SIZE x SIZE (bilinear) and tinted by a random
colour per image, saved as RGB PNG; 360,000 images of 64 x 64 make a 4.4 GB prepared array.
It is generated once into --work (outside the repository; kept and reused, resumable).
The teacher is a TorchScript cnn-tiny (TEACHER=<file> path): the benchmark measures how the
images reach the model, so a fast model is the strict case for the pass's overhead.

Usage: python benchmarks/flat_memory.py [--images 360000] [--size 64] [--subset 30000]
       [--limit-gib 1.5] [--work /tmp/softcache-flat-memory]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.data.prepare import DEBIAN_DIR, load_idx_dir, load_prepared  # noqa: E402
from pipeline.models import create_student  # noqa: E402
from pipeline.training.loop import predict  # noqa: E402

SC = str(Path(sys.executable).parent / "softcache")


def _write_pngs(jobs: list[tuple[str, int, int]], images: np.ndarray, size: int) -> None:
    from PIL import Image

    for path, source, seed in jobs:
        if os.path.exists(path):
            continue
        grey = Image.fromarray(images[source, 0]).resize((size, size), Image.Resampling.BILINEAR)
        tint = np.random.default_rng(seed).uniform(0.4, 1.0, 3)
        rgb = np.rint(np.asarray(grey, dtype=np.float32)[..., None] * tint).astype(np.uint8)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.png"
        Image.fromarray(rgb).save(tmp, compress_level=1)
        os.replace(tmp, path)


def make_folder(folder: Path, count: int, size: int) -> dict[str, list[str]]:
    """``count`` tinted Fashion-MNIST PNGs (a tenth of them in test/); resumes, and returns the paths."""
    from joblib import Parallel, delayed

    real = load_idx_dir(DEBIAN_DIR)
    names = [n.replace("/", "-") for n in real.class_names]
    test = count // 10
    plan = {"train": [], "test": []}
    for split, n, y in (("train", count - test, real.y_train), ("test", test, real.y_test)):
        for i in range(n):
            plan[split].append((str(folder / split / names[y[i % len(y)]] / f"{i:06d}.png"), i % len(y),
                                i + (0 if split == "train" else 10 ** 7)))
    done = folder / ".complete"
    if not done.is_file():
        for split, x in (("train", real.x_train), ("test", real.x_test)):
            jobs = plan[split]
            Parallel(n_jobs=2)(delayed(_write_pngs)(jobs[lo:lo + 5000], x, size) for lo in range(0, len(jobs), 5000))
        done.write_text(f"{count} {size}\n")
    return {split: [p for p, _, _ in jobs] for split, jobs in plan.items()}


def make_subset(folder: Path, subset: Path, paths: dict[str, list[str]], rows: int) -> None:
    """The first ``rows`` training files (and a tenth as many test files), hard-linked: no copy."""
    for split, n in (("train", rows), ("test", rows // 10)):
        for path in paths[split][:n]:
            target = subset / Path(path).relative_to(folder)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)


def measured(name: str, command: list[str], limit_bytes: int | None) -> dict:
    """Run a softcache command; its wall time, exit status, output and peak RSS (the kernel's, by wait4)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"flat-memory-{name}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "2"}, preexec_fn=limit if limit_bytes else None)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}) under a {limit_bytes} byte limit:\n{text[-3000:]}")
    return {"seconds": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024, "output": text}


def _images_per_second(output: str) -> float:
    return float(re.findall(r"\(([0-9]+) images/s", output)[-1])


def teacher_file(work: Path, size: int) -> Path:
    path = work / f"teacher-cnn-tiny-{size}.pt"
    if not path.is_file():
        torch.manual_seed(0)
        model = create_student("cnn-tiny", in_shape=(3, size, size), num_classes=10).eval()
        torch.jit.save(torch.jit.trace(model, torch.rand(4, 3, size, size)), str(path))
    return path


def bare_forward(teacher: Path, prepared: Path) -> tuple[float, int]:
    """Images/s of the teacher alone over the subset's training images, already decoded in memory, at the
    fastest of four batch sizes (the strict baseline), and that batch size."""
    torch.set_num_threads(2)
    model = torch.jit.load(str(teacher)).eval()
    x = torch.from_numpy(np.asarray(load_prepared(prepared).x_train))
    rates = {}
    for batch in (32, 64, 256, 1024):
        predict(model, x[:2048], batch)               # warm-up
        start = time.perf_counter()
        predict(model, x, batch)
        rates[batch] = len(x) / (time.perf_counter() - start)
    best = max(rates, key=rates.get)
    return rates[best], best


def run(images: int, size: int, subset: int, limit_gib: float, work: Path) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    folder, small = work / f"folder-{images}-{size}", work / f"subset-{subset}-{size}"
    paths = make_folder(folder, images, size)
    make_subset(folder, small, paths, subset)
    teacher = teacher_file(work, size)
    limit = int(limit_gib * 2 ** 30)
    rows = []
    arms = [("memory (.npz), subset", small, work / "subset.npz", None),
            ("disk (.h5), subset", small, work / "subset.h5", None),
            (f"disk (.h5), all, under {limit_gib:g} GiB", folder, work / "all.h5", limit)]
    for arm, source, prepared, cap in arms:
        prepared.unlink(missing_ok=True)
        data = measured(f"data-{prepared.stem}", [SC, "data", "--dataset", str(source), "--out", str(prepared)], cap)
        # What every later `make` pays for the folder: re-reading and hashing its files, nothing rewritten.
        check = measured(f"check-{prepared.stem}", [SC, "data", "--dataset", str(source), "--out", str(prepared)], cap)
        assert "up to date" in check["output"], check["output"]
        d = load_prepared(prepared)
        n = len(d.y_train) + len(d.y_test)
        cache = work / f"cache-{prepared.stem}.h5"
        cache.unlink(missing_ok=True)
        passed = measured(f"pass-{prepared.stem}", [SC, "teacher-logits", "--teacher", str(teacher), "--dataset",
                                                      str(prepared), "--out", str(cache), "--device", "cpu"], cap)
        run_dir = work / f"run-{prepared.stem}"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        student = measured(f"student-{prepared.stem}", [
            SC, "student", "--cache", str(cache), "--dataset", str(prepared), "--out-dir", str(run_dir), "--student",
            "cnn-tiny", "--epochs", "1", "--alpha", "0.5", "--threads", "2"], cap)
        epoch = json.loads((run_dir / "metrics.json").read_text())["history"][0]["seconds"]
        rows.append({"arm": arm, "prepared_gb": prepared.stat().st_size / 1e9, "images": n,
                     "prepare_img_s": n / data["seconds"], "prepare_rss": data["peak_rss_mib"],
                     "check_s": check["seconds"],
                     "pass_img_s": _images_per_second(passed["output"]), "pass_rss": passed["peak_rss_mib"],
                     "epoch_img_s": len(d.y_train) / epoch, "epoch_s": epoch, "epoch_rss": student["peak_rss_mib"]})
    bare, batch = bare_forward(teacher, work / "subset.h5")
    rows.append({"arm": "bare teacher forward, subset in memory", "bare_img_s": bare, "bare_batch": batch})
    return rows


@click.command()
@click.option("--images", default=360_000, show_default=True, help="Images in the generated folder.")
@click.option("--size", default=64, show_default=True, help="Their height and width (RGB).")
@click.option("--subset", default=30_000, show_default=True, help="Training images of the in-memory comparison.")
@click.option("--limit-gib", default=1.5, show_default=True, help="RLIMIT_AS of every step on the whole folder.")
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/softcache-flat-memory"), show_default=True)
def main(images, size, subset, limit_gib, work):
    rows = run(images, size, subset, limit_gib, work)
    memory, disk, whole, bare = rows
    print("## Flat memory: an image folder larger than the memory its stages may use\n")
    print(f"{dt.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}; `python benchmarks/flat_memory.py --images {images} --size {size} --subset {subset} "
          f"--limit-gib {limit_gib:g}`. A folder of {images:,} RGB PNGs of {size}x{size} (tinted Fashion-MNIST); "
          f"teacher: a TorchScript cnn-tiny; student: cnn-tiny, one epoch, 2 threads. Peak RSS is the kernel's "
          f"(wait4); the whole-folder steps ran under RLIMIT_AS = {limit_gib:g} GiB.\n")
    print("| arm | prepared file | prepare img/s | prepare peak RSS | teacher pass img/s | pass peak RSS "
          "| student epoch img/s | epoch peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in (memory, disk, whole):
        print(f"| {r['arm']} | {r['prepared_gb']:.2f} GB | {r['prepare_img_s']:,.0f} | {r['prepare_rss']:,.0f} MiB "
              f"| {r['pass_img_s']:,.0f} | {r['pass_rss']:,.0f} MiB | {r['epoch_img_s']:,.0f} "
              f"| {r['epoch_rss']:,.0f} MiB |")
    print(f"\n- Student epoch streamed from disk / in memory, same subset: "
          f"**{disk['epoch_s'] / memory['epoch_s']:.3f}** in time "
          f"({disk['epoch_s']:.1f} s vs {memory['epoch_s']:.1f} s).")
    print(f"- Teacher pass over the prepared folder / bare teacher forward on decoded in-memory tensors: "
          f"**{whole['pass_img_s'] / bare['bare_img_s']:.3f}** in throughput (whole folder, under the limit; "
          f"{whole['pass_img_s']:,.0f} vs {bare['bare_img_s']:,.0f} img/s, the bare forward at its fastest batch "
          f"of 32, 64, 256 and 1024: {bare['bare_batch']}), "
          f"{disk['pass_img_s'] / bare['bare_img_s']:.3f} on the subset. The pass reads rows decoded once by the "
          f"data stage; counting that decode too (prepare, then pass): "
          f"{1 / (1 / whole['prepare_img_s'] + 1 / whole['pass_img_s']) / bare['bare_img_s']:.3f}.")
    print(f"- An unchanged rerun re-reads and hashes every file of the folder and rewrites nothing: "
          f"{whole['check_s']:.1f} s for {whole['images']:,} files ({memory['check_s']:.1f} s for the subset).")


if __name__ == "__main__":
    main()
