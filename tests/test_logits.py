"""The teacher pass: resumable after kill -9, one writer at a time."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.cache.format import ATTRS_DIGEST
from pipeline.config import LogitsConfig
from pipeline.errors import UsageError
from pipeline.teacher.logits_pass import (
    exclusive_writer,
    parts_dir,
    write_teacher_logits,
)


def read_all(path):
    with h5py.File(path) as f:
        return {f"{g}/{d}": f[g][d][()] for g in ("train", "test") for d in f[g]}


def test_resume_skips_finished_chunks_and_matches(tmp_path, prepared, teacher_dir, cache_file, monkeypatch):
    cfg = LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=tmp_path / "r.h5",
                       device="cpu", chunk_rows=16)
    reference = read_all(cache_file)
    # Simulate a pass that died after a few chunks: run it, then keep only some parts.
    parts = parts_dir(cfg.out)
    full = write_teacher_logits(cfg)
    assert full["resumed_rows"] == 0 and not parts.exists()
    cfg.out.unlink()
    import pipeline.teacher.logits_pass as logits_mod
    original = logits_mod.predict
    calls = {"n": 0}

    def dying_predict(*args, **kwargs):     # the 4th chunk never finishes
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(logits_mod, "predict", dying_predict)
        with pytest.raises(KeyboardInterrupt):
            write_teacher_logits(cfg)
    assert not cfg.out.exists() and len(list(parts.glob("*.npy"))) == 3
    resumed = write_teacher_logits(cfg)
    assert resumed["resumed_rows"] == 48
    again = read_all(cfg.out)
    assert again.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(again[name], reference[name])


def test_parts_from_another_teacher_are_discarded(tmp_path, prepared, teacher_dir):
    cfg = LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=tmp_path / "c.h5",
                       device="cpu", chunk_rows=16)
    parts = parts_dir(cfg.out)
    parts.mkdir(parents=True)
    (parts / "key.json").write_text('{"teacher": "someone else"}')
    np.save(parts / "train-000000.npy", np.full((16, 3), 99.0, np.float32))
    assert write_teacher_logits(cfg)["resumed_rows"] == 0
    with h5py.File(cfg.out) as f:
        assert f["train/logits"][0, 0] != 99.0


def test_second_writer_is_refused(tmp_path, prepared, teacher_dir):
    cfg = LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=tmp_path / "c.h5", device="cpu")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pipeline.teacher.logits_pass import exclusive_writer\n"
        f"with exclusive_writer(Path({str(cfg.out)!r})):\n    print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match="another teacher pass is writing"):
            write_teacher_logits(cfg)
        assert not cfg.out.exists()
    finally:
        holder.kill()
        holder.wait()
    with exclusive_writer(cfg.out):     # the dead holder's lock is gone
        pass


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume_matches(tmp_path):
    """Real subprocesses killed with SIGKILL mid-pass; the rerun must equal a clean run."""
    from pipeline.config import TeacherConfig
    from pipeline.data.prepare import save_prepared
    from pipeline.teacher.fit import train_teacher
    from tests.conftest import make_dataset

    save_prepared(make_dataset(n_train=3000, n_test=500), tmp_path / "d.npz")
    train_teacher(TeacherConfig(dataset=tmp_path / "d.npz", out_dir=tmp_path / "t", arch="cnn", epochs=1,
                                device="cpu"), progress=False)
    args = ["teacher-logits", "--teacher", tmp_path / "t" / "teacher.pt", "--dataset", tmp_path / "d.npz",
            "--device", "cpu", "--chunk-rows", "100", "--batch-size", "50"]
    cli = [sys.executable, "-m", "stages.cli"]
    subprocess.run([*cli, *map(str, args), "--out", str(tmp_path / "clean.h5")], check=True, capture_output=True)
    reference = read_all(tmp_path / "clean.h5")

    out = tmp_path / "killed.h5"
    parts = parts_dir(out)
    seen = []
    for kill_after in (1, 7, 19):       # chunks finished before the kill; 35 in all
        proc = subprocess.Popen([*cli, *map(str, args), "--out", str(out)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and len(list(parts.glob("*.npy"))) < kill_after:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(len(list(parts.glob("*.npy"))))
        assert not out.exists()
    assert seen == sorted(seen) and seen[-1] < 35, seen    # progress kept across kills, not finished
    done = subprocess.run([*cli, *map(str, args), "--out", str(out)], check=True, capture_output=True, text=True)
    assert "resumed from an earlier run" in done.stdout
    again = read_all(out)
    for name in reference:
        np.testing.assert_array_equal(again[name], reference[name])


def test_torchrun_two_processes_write_the_single_process_cache(tmp_path, prepared, teacher_dir):
    """A real 2-rank launch (gloo on the CPU): same values, labels, index and attrs
    (but the creation time and the pass's seconds) as the 1-process pass, in one file every reader takes."""
    single = tmp_path / "one.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}   # torchrun gives each rank one thread
    common = ["teacher-logits", "--teacher", str(teacher_dir / "teacher.pt"), "--dataset", str(prepared),
              "--chunk-rows", "20", "--batch-size", "8", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "stages.cli", *common, "--out", str(single)],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    sharded = tmp_path / "two.h5"
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "stages.cli", *common,
                          "--out", str(sharded)], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = read_all(single), read_all(sharded)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    with h5py.File(single) as fa, h5py.File(sharded) as fb:
        timing = ("created", "pass_seconds")
        attrs_a = {k: v for k, v in fa.attrs.items() if k not in timing}
        attrs_b = {k: v for k, v in fb.attrs.items() if k not in timing}
        assert attrs_a.keys() == attrs_b.keys()
        # The attribute digest covers the timing attributes too; the value digests must match exactly.
        values_a, values_b = (json.loads(d.pop("digests")) for d in (attrs_a, attrs_b))
        values_a.pop(ATTRS_DIGEST), values_b.pop(ATTRS_DIGEST)
        assert values_a == values_b
        assert all(np.array_equal(attrs_a[k], attrs_b[k]) for k in attrs_a)
    assert not parts_dir(sharded).exists()
    assert two.stdout.count("train +") == 1     # one summary line, from rank 0


def test_ranks_take_contiguous_slices_that_cover_every_chunk():
    from pipeline.teacher.pass_parts import World as _World
    chunks = list(range(7))
    slices = [_World(rank, 3, "cpu").my_slice(chunks) for rank in range(3)]
    assert slices == [[0, 1, 2], [3, 4], [5, 6]]
    assert _World(0, 1, "cpu").my_slice(chunks) == chunks
