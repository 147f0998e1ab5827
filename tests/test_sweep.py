"""Sweeps: a grid of runs from one cache, never the teacher; resumable; failures contained;
the same results on a real Dask cluster as with joblib."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed
import pytest
import torch
from torch import nn

from pipeline.config import StudentConfig, SweepConfig
from pipeline.errors import UsageError
from pipeline.experiments.sweep import SUMMARY_CSV, SUMMARY_MD, plan_sweep, run_sweep
from pipeline.files import exclusive_writer
from pipeline.models import images as models


def sweep_config(tmp_path, prepared, cache_file, **kw):
    student = StudentConfig(cache=cache_file, dataset=prepared, out_dir=tmp_path, epochs=1, batch_size=32)
    grid = {"students": ("cnn-tiny", "mlp"), "Ts": (2.0, 4.0), "alphas": (0.0, 0.5), "seeds": (0,), "threads": 1}
    return SweepConfig(student=student, runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports", **(grid | kw))


def digest(path):
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_sweep_trains_the_grid_without_the_teacher_and_resumes(tmp_path, prepared, cache_file, teacher_dir):
    cfg = sweep_config(tmp_path, prepared, cache_file, jobs=2)
    names = [r.out_dir.name for r in plan_sweep(cfg)]
    assert names == ["cnn-tiny-scratch-s0-e1-on-tiny", "cnn-tiny-T2-a0.5-s0-e1-on-tiny", "cnn-tiny-T4-a0.5-s0-e1-on-tiny",
                     "mlp-scratch-s0-e1-on-tiny", "mlp-T2-a0.5-s0-e1-on-tiny", "mlp-T4-a0.5-s0-e1-on-tiny"]
    before = digest(cache_file)
    (teacher_dir / "teacher.pt").unlink()     # a sweep that touched the teacher would fail now
    records = run_sweep(cfg)
    assert [r["status"] for r in records] == ["trained"] * 6
    assert digest(cache_file) == before
    for name in names:
        metrics = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())
        assert (tmp_path / "runs" / name / "model.pt").is_file() and 0 <= metrics["ece"] <= 1
    rows = list(csv.DictReader((tmp_path / "reports" / SUMMARY_CSV).open()))
    assert [r["run"] for r in rows] == names and all(float(r["test_acc"]) > 0 for r in rows)

    # Re-running (an interrupted sweep, say) trains only what is missing.
    (tmp_path / "runs" / names[1] / "metrics.json").unlink()
    seen = []
    again = run_sweep(cfg, on_result=seen.append)
    assert [r["status"] for r in again] == ["skipped", "trained", "skipped", "skipped", "skipped", "skipped"]
    assert len(seen) == 6
    assert "1 trained, 5 already finished" in (tmp_path / "reports" / SUMMARY_MD).read_text()


@pytest.fixture
def broken_student():
    """A user-registered student whose forward fails in training (a shape it cannot take is caught
    before training, by the registry's probe in eval mode)."""
    class Broken(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.head = nn.Linear(1, num_classes)

        def forward(self, x):
            if self.training:
                raise RuntimeError("broken in training")
            return self.head(x.new_zeros(len(x), 1))

    def broken(in_shape=(1, 28, 28), num_classes=10, mean=None, std=None):
        return Broken(num_classes)
    models.register_student(broken)
    yield "broken"
    models._STUDENTS.pop("broken")


def test_a_failing_run_is_reported_and_the_others_are_kept(tmp_path, prepared, cache_file, broken_student):
    cfg = sweep_config(tmp_path, prepared, cache_file, students=("mlp", broken_student), Ts=(4.0,), jobs=1)
    records = run_sweep(cfg)
    status = {r["run"]: r["status"] for r in records}
    assert status == {"mlp-scratch-s0-e1-on-tiny": "trained", "mlp-T4-a0.5-s0-e1-on-tiny": "trained",
                      "broken-scratch-s0-e1-on-tiny": "failed", "broken-T4-a0.5-s0-e1-on-tiny": "failed"}
    assert all((tmp_path / "runs" / n / "metrics.json").is_file() for n, s in status.items() if s == "trained")
    assert not (tmp_path / "runs" / "broken-scratch-s0-e1-on-tiny").exists()
    summary = (tmp_path / "reports" / SUMMARY_MD).read_text()
    assert "## Failed runs" in summary and "RuntimeError" in summary and "broken-T4-a0.5-s0-e1-on-tiny" in summary


@pytest.mark.parametrize("kw,match", [
    ({"Ts": ()}, "TS is empty"), ({"Ts": (2.0, 2.0)}, "TS lists 2.0 twice"),
    ({"Ts": (4.0, -1.0)}, r"TS: T must be a number in \[0.01, 100\], got -1"), ({"alphas": (0.0, 1.5)}, r"ALPHAS: ALPHA must be a number in \[0, 1\], got 1.5"),
    ({"seeds": (0, -3)}, r"SEEDS: SEED must be a whole number in \[0, 4294967295\], got -3"), ({"students": ("mlp", "vit")}, "unknown student 'vit'"),
    ({"backend": "dask"}, "needs SCHEDULER"), ({"jobs": 0}, "JOBS")])
def test_bad_grids_are_refused_before_any_run(tmp_path, prepared, cache_file, kw, match):
    with pytest.raises(UsageError, match=match):
        sweep_config(tmp_path, prepared, cache_file, **kw)
    assert not (tmp_path / "runs").exists()


def test_dask_cluster_gives_the_joblib_results(tmp_path, prepared, cache_file):
    grid = {"students": ("cnn-tiny",), "Ts": (4.0,), "alphas": (0.0, 0.5), "seeds": (0, 1)}
    local = run_sweep(sweep_config(tmp_path / "joblib", prepared, cache_file, jobs=2, **grid))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = run_sweep(sweep_config(tmp_path / "dask", prepared, cache_file, backend="dask",
                                        scheduler=cluster.scheduler_address, **grid))
    assert [r["status"] for r in remote] == ["trained"] * 4
    for a, b in zip(local, remote):
        assert a["run"] == b["run"]
        for key in ("test_acc", "ece", "agreement_with_teacher", "reliability"):
            assert a["metrics"][key] == b["metrics"][key], (a["run"], key)
        wa = torch.load(tmp_path / "joblib" / "runs" / a["run"] / "model.pt", weights_only=True)["fingerprint"]
        wb = torch.load(tmp_path / "dask" / "runs" / b["run"] / "model.pt", weights_only=True)["fingerprint"]
        assert wa == wb


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: no psutil needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.slow
def test_a_sweep_killed_with_9_takes_its_workers_with_it(tmp_path, prepared, cache_file):
    """Killed, the sweep cannot tell its workers; each watches it, ends itself, and drops its run's lock, so the
    same command run again is not refused (it was: the orphaned workers held the runs)."""
    args = [sys.executable, "-m", "stages.cli", "sweep", "--cache", str(cache_file), "--dataset", str(prepared),
            "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports"), "--students", "mlp",
            "--Ts", "4", "--alphas", "0 0.5", "--seeds", "0", "--epochs", "400", "--jobs", "2", "--threads", "1"]
    sweep = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = [tmp_path / "runs" / f".mlp-{arm}-s0-e400-on-tiny.lock" for arm in ("scratch", "T4-a0.5")]
    deadline = time.monotonic() + 120
    while not all(lock.exists() for lock in locks):
        assert sweep.poll() is None and time.monotonic() < deadline, "the runs never started"
        time.sleep(0.2)
    workers = _children(sweep.pid)
    assert workers
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    deadline = time.monotonic() + 10
    while not all(_gone(w) for w in workers):
        assert time.monotonic() < deadline, "the workers outlived the sweep"
        time.sleep(0.2)
    for lock in locks:       # the rerun's lock: free
        with exclusive_writer(lock.parent / lock.name[1:-len(".lock")], what="student run"):
            pass
