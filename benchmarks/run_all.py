"""Training-speed benchmarks as ratios measured side by side in one run (the machines are noisy).

1. Student epoch: distillation from cached soft targets vs plain cross-entropy, same
   student, same data, same batches. The ratio is the whole cost of distilling once the
   cache exists.
2. Teacher pass: the teacher-logits stage (inference + HDF5 writes + checksums) vs the
   bare teacher forward over the same images on the same device. The ratio is the cost
   of writing the cache.

3. Online distillation: the same student epoch with the teacher run on every batch,
   which is what the cache replaces.

Usage: python benchmarks/run_all.py [--rows N] [--repeats R]
Real Fashion-MNIST (first N training images) when it is installed, else random images.
"""

from __future__ import annotations

import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F
from fixtures import dataset, untrained_teacher

from pipeline.cache.reader import LogitCache
from pipeline.config import LogitsConfig
from pipeline.data.prepare import Dataset, save_prepared
from pipeline.losses import kd_loss_from_log_targets
from pipeline.models import create_student
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.training.loop import fit, predict, to_unit_float


def _epoch_seconds(x, loss_fn, student: str) -> float:
    torch.manual_seed(0)
    model = create_student(student)
    return fit(model, x, loss_fn, epochs=1, batch_size=128, lr=3e-3, weight_decay=5e-4, seed=0,
               augment=False, progress=False)[0]["seconds"]


def bench_student_epoch(data: Dataset, cache: LogitCache, teacher: torch.nn.Module, student: str,
                        repeats: int) -> dict:
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    targets = cache.log_soft_targets(4.0)
    teacher.eval()

    def online(logits, idx):            # what the cache saves: a teacher forward on every batch
        with torch.no_grad():
            t = F.log_softmax(teacher(to_unit_float(x[idx])) / 4.0, dim=-1)
        return kd_loss_from_log_targets(logits, t, y[idx], T=4.0, alpha=0.9)

    arms = {
        "ce": lambda logits, idx: F.cross_entropy(logits, y[idx]),
        "kd": lambda logits, idx: kd_loss_from_log_targets(logits, targets[idx], y[idx], T=4.0, alpha=0.9),
        "online": online,
    }
    times = {k: [] for k in arms}
    for _ in range(repeats):            # interleaved, so drift hits both arms alike
        for name, fn in arms.items():
            times[name].append(_epoch_seconds(x, fn, student))
    best = {k: min(v) for k, v in times.items()}
    return {"student": student, "ce_s": best["ce"], "kd_s": best["kd"], "online_s": best["online"],
            "ratio": best["kd"] / best["ce"], "speedup": best["online"] / best["kd"]}


def bench_teacher_pass(prepared: Path, ckpt: Path, model: torch.nn.Module, data: Dataset, repeats: int,
                       workdir: Path) -> dict:
    stage, bare = [], []
    x_all = [torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)]
    for i in range(repeats):
        start = time.perf_counter()
        for x in x_all:
            predict(model, x)           # the device's inference batch, as the stage uses
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        write_teacher_logits(LogitsConfig(teacher=ckpt, dataset=prepared, out=workdir / f"c{i}.h5", device="cpu"))
        stage.append(time.perf_counter() - start)
    images = len(data.y_train) + len(data.y_test)
    return {"images": images, "bare_s": min(bare), "stage_s": min(stage),
            "bare_ips": images / min(bare), "stage_ips": images / min(stage),
            "throughput_ratio": min(bare) / min(stage)}


@click.command()
@click.option("--rows", default=20000, show_default=True, help="Training images to use.")
@click.option("--repeats", default=3, show_default=True)
def main(rows: int, repeats: int) -> None:
    data = dataset(rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_prepared(data, tmp / "d.npz")
        teacher, ckpt = untrained_teacher(tmp)
        teacher_pass = bench_teacher_pass(tmp / "d.npz", ckpt, teacher, data, repeats, tmp)
        cache = LogitCache(tmp / "c0.h5")
        epochs = [bench_student_epoch(data, cache, teacher, s, repeats) for s in ("cnn-tiny", "mlp")]

    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU"
    lines = [
        f"Measured {dt.date.today().isoformat()} on {machine}; data: {data.name}, {rows} training images; "
        f"best of {repeats} interleaved repeats. Command: `make bench` (`python benchmarks/run_all.py`).",
        "",
        "## Student epoch: cached-KD loss vs plain cross-entropy vs online distillation",
        "",
        "Online = the CPU teacher `cnn` (140k params) runs forward on every batch instead of the cache.",
        "",
        "| student | CE epoch (s) | KD-from-cache epoch (s) | ratio KD/CE | online-KD epoch (s) | cache speedup over online |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {e['student']} | {e['ce_s']:.2f} | {e['kd_s']:.2f} | {e['ratio']:.3f} | {e['online_s']:.2f} | "
          f"{e['speedup']:.1f}x |" for e in epochs],
        "",
        "## Teacher pass: teacher-logits stage vs bare teacher forward (CPU teacher `cnn`)",
        "",
        "| images | bare forward (img/s) | stage incl. HDF5 writes (img/s) | stage/bare throughput |",
        "|---:|---:|---:|---:|",
        f"| {teacher_pass['images']} | {teacher_pass['bare_ips']:.0f} | {teacher_pass['stage_ips']:.0f} | "
        f"{teacher_pass['throughput_ratio']:.3f} |",
        "",
    ]
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
