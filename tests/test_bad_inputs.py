"""The bad-input matrix: a careful user's mistakes, through Make and through the CLI, on a real finished
pipeline (Fashion-MNIST, LIMIT=500). Each case must exit 2 with one line on stderr (Make's own
"make: *** ... Error 2" trailer aside) and no traceback, and leave the sha256 and mtime of every finished
artifact and every stamp as they were; afterwards the next correct command rebuilds nothing (Make's dry
run). A refused DATASET may leave the stamp of the dataset it names (a file that names no artifact).

The table this test prints with ``-s`` (case, exit, first line, artifacts unchanged) is the one in the
issue notes."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SC = str(ROOT / ".venv" / "bin" / "softcache")
pytestmark = pytest.mark.slow
_MAKE_TRAILER = re.compile(r"^make(\[\d+\])?: \*\*\* ")   # "make[1]: *** [Makefile:82: ...] Error 2"


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished pipeline (data, teacher, cache, one student run) and the bad files the cases use."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    data = tmp / "data"
    common = ["LIMIT=500", "TEACHER_EPOCHS=1", "EPOCHS=1", "DEVICE=cpu", f"DATA_DIR={data}", "STUDENT=mlp", "T=4"]
    build = subprocess.run(["make", "--no-print-directory", "student", *common], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, "MAKEFLAGS": ""})
    assert build.returncode == 0, build.stderr
    files = tmp / "files"
    files.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 28, 28)).astype(np.float32)
    y = np.arange(40) % 10
    nan = x.copy()
    nan[7, 3, 3] = np.nan
    np.savez(files / "nan.npz", x_train=nan, y_train=y, x_test=x[:10], y_test=y[:10])
    stray = y.copy()
    stray[5] = 42
    np.savez(files / "stray.npz", x_train=x, y_train=stray, x_test=x[:10], y_test=y[:10])
    wide = x.copy()
    wide[3, 0, 0] = 300
    np.savez(files / "range.npz", x_train=wide, y_train=y, x_test=x[:10], y_test=y[:10])
    np.savez(files / "nolabels.npz", x_train=x)
    (files / "notes.txt").write_text("not a dataset\n")
    cache = next((data / "cache").glob("*.h5"))
    (files / "truncated.h5").write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    (files / "text.h5").write_text("not HDF5\n")
    import torch
    from torch import nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    torch.save(model, files / "pickle.pt")
    program = torch.export.export(model, (torch.zeros(2, 1, 28, 28),))
    torch.export.save(program, files / "fixed.pt2")
    (files / "factories.py").write_text("import torch.nn as nn\n\ndef needs(width):\n"
                                        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, width))\n\n"
                                        "def boom():\n    raise RuntimeError('no GPU here')\n\n"
                                        "def student_boom(in_shape, num_classes):\n    raise ValueError('no such layer')\n\n"
                                        "def not_a_module(in_shape, num_classes):\n    return 'a string'\n\n"
                                        "def too_wide(in_shape, num_classes):\n"
                                        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes + 2))\n")
    torch.save(model.state_dict(), files / "weights.pt")
    return {"data": data, "files": files, "common": common, "cache": cache,
            "dataset": next((data / "dataset").glob("*.npz")), "teacher": next((data / "teacher").glob("*/teacher.pt")),
            "run": next((data / "runs").glob("*/metrics.json")).parent}


def _make_cases(w) -> list[tuple[str, list[str]]]:
    f = w["files"]
    student = lambda *extra: ["student", *w["common"], *extra]   # noqa: E731
    return [
        ("LIMIT=-5", student("LIMIT=-5")), ("DEVICE=tpu", student("DEVICE=tpu")),
        ("data SOURCE=/nonexistent", ["data", *w["common"], "SOURCE=/nonexistent"]),
        ("THREADS=-1", student("THREADS=-1")), ("T=0", student("T=0")), ("T=-1", student("T=-1")),
        ("T=abc", student("T=abc")), ("ALPHA=1.5", student("ALPHA=1.5")), ("ALPHA=-0.1", student("ALPHA=-0.1")),
        ("SEED=-1", student("SEED=-1")), ("EPOCHS=0", student("EPOCHS=0")), ("EPOCHS=2.5", student("EPOCHS=2.5")),
        ("TEACHER_T=0", student("TEACHER_T=0")), ("CACHE_DTYPE=int8", student("CACHE_DTYPE=int8")),
        ("CACHE_TOPK=-1", student("CACHE_TOPK=-1")), ("VIEWS=0", student("VIEWS=0")),
        ("MIXUP=1 without views", student("MIXUP=1")), ("AUGMENT=2", student("AUGMENT=2")),
        ("AUGMENT=1 REPLAY=2", student("AUGMENT=1", "REPLAY=2")), ("REPLAY=-1", student("REPLAY=-1")),
        ("HOLDOUT=-5", student("HOLDOUT=-5")), ("LABELS=-3", student("LABELS=-3")),
        ("LABELS list for student", student("LABELS=600 1200")),
        ("LABELS=0 ALPHA=0.5", student("LABELS=0", "ALPHA=0.5")),
        ("COMBINE=median", student("COMBINE=median")), ("TEACHERS=0", student("TEACHERS=0")),
        ("TEACHERS=2 with a model file", student("TEACHERS=2", f"TEACHER={f / 'fixed.pt2'}")),
        ("TEACHERS=2 CACHE_TOPK=3", student("TEACHERS=2", "CACHE_TOPK=3")),
        ("TEACHER=published LIMIT=500", student("TEACHER=published")),
        ("TRANSFER=/nonexistent.npz", student("TRANSFER=/nonexistent.npz")),
        ("TEACHER_WEIGHTS without factory", student(f"TEACHER_WEIGHTS={f / 'weights.pt'}")),
        ("LAYOUT=hwc", student("LAYOUT=hwc")), ("LOG=wandb", student("LOG=wandb")),
        ("SWEEP_BACKEND=ray", ["sweep", *w["common"], "SWEEP_BACKEND=ray"]),
        ("SWEEP_BACKEND=dask, no SCHEDULER", ["sweep", *w["common"], "SWEEP_BACKEND=dask"]),
        ("JOBS=0", ["sweep", *w["common"], "JOBS=0"]), ("CHECKPOINT_EVERY=-1", student("CHECKPOINT_EVERY=-1")),
        ("CHECKPOINT_MINUTES=-1", student("CHECKPOINT_MINUTES=-1")), ("NPROC=0", student("NPROC=0")),
        ("TS='1 x'", ["sweep", *w["common"], "TS=1 x"]), ("ALPHAS twice", ["sweep", *w["common"], "ALPHAS=0.5 0.5"]),
        ("SEEDS='0 -1'", ["sweep", *w["common"], "SEEDS=0 -1"]),
        ("LENGTHS='0 15'", ["experiment-patient", *w["common"], "LENGTHS=0 15"]),
        ("BANKS='8 0'", ["experiment-patient", *w["common"], "BANKS=8 0"]),
        ("VIEW_SEED=-1", student("VIEW_SEED=-1")), ("TEACHER_EPOCHS=-1", student("TEACHER_EPOCHS=-1")),
        ("TEACHER_SEED=x", student("TEACHER_SEED=x")), ("DEMO_ALPHA=2", ["demo", *w["common"], "DEMO_ALPHA=2"]),
        ("ALPHA_T=0", ["self-distill", *w["common"], "ALPHA_T=0"]),
        ("METHOD=byot STUDENT=mlp", ["self-distill", *w["common"], "METHOD=byot"]),   # common has STUDENT=mlp
        ("METHOD=byot STUDENT=lm-small", ["self-distill", *w["common"], "METHOD=byot", "STUDENT=lm-small"]),
        ("METHOD=dino", ["self-distill", *w["common"], "METHOD=dino"]),
        ("CSKD_LAMBDA=0", ["self-distill", *w["common"], "METHOD=cskd", "CSKD_LAMBDA=0"]),
        ("BYOT_T=0", ["self-distill", *w["common"], "METHOD=byot", "STUDENT=cnn-tiny", "BYOT_T=0"]),
        ("STUDENT=nope (stage)", student("STUDENT=nope")),
        ("STUDENT=lm-small on images", student("STUDENT=lm-small")),
        ("STUDENT=timm:resnet18 on text", ["student", f"DATA_DIR={w['data']}", "DATASET=stdlib", "LIMIT=500",
                                           "STUDENT=timm:resnet18"]),
        ("STUDENT=hf:/nonexistent", ["student", f"DATA_DIR={w['data']}", "DATASET=stdlib", "LIMIT=500",
                                     "STUDENT=hf:/nonexistent/config.json"]),
        ("STUDENT=timm name with a space", student("STUDENT=timm:res net")),
        ("DATASET with a NaN pixel (stage)", ["data", *w["common"], f"DATASET={f / 'nan.npz'}"]),
        ("DATASET with a stray label (stage)", ["data", *w["common"], f"DATASET={f / 'stray.npz'}"]),
        ("DATASET out of range (stage)", ["data", *w["common"], f"DATASET={f / 'range.npz'}"]),
        ("DATASET without labels (stage)", ["data", *w["common"], f"DATASET={f / 'nolabels.npz'}"]),
        ("DATASET=/nonexistent.npz (stage)", ["data", *w["common"], "DATASET=/nonexistent.npz"]),
        ("export RUN=nonexistent (stage)", ["export", *w["common"], "RUN=nonexistent"]),
    ]


def _cli_cases(w) -> list[tuple[str, list[str]]]:
    f, cache, dataset, teacher = w["files"], w["cache"], w["dataset"], w["teacher"]
    out = w["data"] / "runs" / "bad-run"
    student = lambda *extra: ["student", "--cache", cache, "--dataset", dataset, "--out-dir", out, *extra]  # noqa: E731
    logits = lambda t, *extra: ["teacher-logits", "--teacher", t, "--dataset", dataset,  # noqa: E731
                                "--out", w["data"] / "cache" / "bad.h5", *extra]
    return [
        ("student --cache missing", ["student", "--cache", f / "nope.h5", "--dataset", dataset, "--out-dir", out]),
        ("student --cache truncated", ["student", "--cache", f / "truncated.h5", "--dataset", dataset,
                                       "--out-dir", out]),
        ("student --cache not HDF5", ["student", "--cache", f / "text.h5", "--dataset", dataset, "--out-dir", out]),
        ("student --epochs 0", student("--epochs", "0")), ("student --T nan", student("--T", "nan")),
        ("self-distill --method byot --student mlp", ["self-distill", "--dataset", dataset, "--out-dir", out,
                                                      "--method", "byot", "--student", "mlp"]),
        ("self-distill --method cskd --cskd-T 0", ["self-distill", "--dataset", dataset, "--out-dir", out,
                                                   "--method", "cskd", "--cskd-T", "0"]),
        ("student --labels 0 --alpha 0.5", student("--labels", "0", "--alpha", "0.5")),
        ("student --replay 4 without views", student("--replay", "4")),
        ("student --dataset of other data", ["student", "--cache", cache, "--dataset", f / "nan.npz",
                                             "--out-dir", out]),
        ("student --student timm:misspelled", student("--student", "timm:mobilenetv3_smal_050")),
        ("student --student timm:vit at 28x28", student("--student", "timm:vit_tiny_patch16_224")),
        ("student --student factory raising", student("--student", "factories:student_boom")),
        ("student --student factory returning a str", student("--student", "factories:not_a_module")),
        ("student --student output wider than the classes", student("--student", "factories:too_wide")),
        ("student --student lm-small on an image cache", student("--student", "lm-small")),
        ("verify a truncated cache", ["verify", f / "truncated.h5"]),
        ("verify --teacher without --dataset", ["verify", cache, "--teacher", teacher]),
        ("inspect a missing cache", ["inspect", f / "nope.h5"]),
        ("teacher-logits --teacher pickle", logits(f / "pickle.pt")),
        ("teacher-logits --teacher fixed-batch program", logits(f / "fixed.pt2")),
        ("teacher-logits --teacher factory needing args", logits("factories:needs", "--teacher-weights",
                                                                 f / "weights.pt")),
        ("teacher-logits --teacher factory raising", logits("factories:boom", "--teacher-weights", f / "weights.pt")),
        ("teacher-logits --teacher missing", logits(f / "nope.pt")),
        ("teacher-logits --teacher a text file", logits(f / "notes.txt")),
        ("teacher-logits --topk 10 (all classes)", logits(teacher, "--topk", "10")),
        ("teacher --arch nope", ["teacher", "--dataset", dataset, "--out-dir", w["data"] / "teacher" / "bad",
                                 "--arch", "nope"]),
        ("data --dataset /nonexistent", ["data", "--dataset", "/nonexistent.npz", "--out", f / "x.npz"]),
        ("export a missing run", ["export", "--run-dir", w["data"] / "runs" / "nope"]),
        ("export --formats onnx,xyz", ["export", "--run-dir", w["run"], "--formats", "onnx,xyz"]),
        ("student into a run another writer holds", ["student", "--cache", cache, "--dataset", dataset,
                                                     "--out-dir", w["run"], "--student", "mlp", "--T", "4",
                                                     "--alpha", "0.1", "--epochs", "1"]),
    ]


def _run(kind: str, args: list, w) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAKEFLAGS": "", "PYTHONPATH": str(w["files"])}
    env.pop("SOFTCACHE_CALLER", None)
    command = ["make", "--no-print-directory", *args] if kind == "make" else [SC, *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def _held(lock: Path):
    """A live process holding the run's writer lock, as a running student would."""
    code = (f"import fcntl,sys,time\nf=open({str(lock)!r},'w')\nfcntl.flock(f,fcntl.LOCK_EX)\n"
            f"print('held',flush=True)\ntime.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_bad_inputs_get_one_line_exit_2_and_change_nothing(world, capsys):
    before = _snapshot(world["data"])
    cases = [("make", *c) for c in _make_cases(world)] + [("cli", *c) for c in _cli_cases(world)]
    assert len(cases) >= 60
    rows, failures = [], []
    for kind, name, args in cases:
        holder = _held(world["run"].parent / f".{world['run'].name}.lock") if "another writer" in name else None
        try:
            proc = _run(kind, args, world)
        finally:
            if holder is not None:
                holder.kill()
                holder.wait()
                (world["run"].parent / f".{world['run'].name}.lock").unlink(missing_ok=True)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip() and not _MAKE_TRAILER.match(line)]
        after = _snapshot(world["data"])
        changed = sorted(k for k in before if after.get(k) != before[k])
        added = sorted(k for k in set(after) - set(before)
                       if not (k.startswith("params/data-") and "DATASET" in name))
        ok = proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr and not changed and not added
        rows.append((name, kind, proc.returncode, lines[0] if lines else "", not changed and not added))
        if not ok:
            failures.append(f"{kind} {name}: exit {proc.returncode}, stderr {proc.stderr[-600:]!r}, changed {changed}, "
                            f"added {added}")
        for k in set(after) - set(before):      # a refused dataset's stamp: not kept for the next case
            (world["data"] / k).unlink()
    with capsys.disabled():
        print("\n| case | via | exit | first line | artifacts unchanged |\n|---|---|---:|---|---|")
        for name, kind, code, line, same in rows:
            print(f"| {name} | {kind} | {code} | {line.replace('|', '/')[:160]} | {'yes' if same else 'NO'} |")
    assert not failures, "\n".join(failures)
    dry = _run("make", ["-n", "student", *world["common"]], world)
    assert dry.returncode == 0 and "softcache" not in dry.stdout, dry.stdout
