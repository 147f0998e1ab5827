"""Kill -9 through Make at any instant: 10 teacher passes and 10 student runs, 3 of each killed just after
their final rename (before the process exits, when GNU make used to delete the finished file). The
finished artifact is never deleted and never partial, and the rerun gives identical results.

Make runs the stage, and the kill goes to the stage's process, as an OOM killer or a lost machine would
send it; Make itself lives on and reacts as it does to any killed recipe."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cache.reader import LogitCache
from pipeline.data.prepare import save_prepared
from tests.conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _make(*args) -> subprocess.Popen:
    return subprocess.Popen(["make", "--no-print-directory", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "MAKEFLAGS": ""},
                            start_new_session=True)


def _stage_pid(make_pid: int, stage: str) -> int | None:
    """The softcache process Make started (its child), once it runs."""
    out = subprocess.run(["pgrep", "-P", str(make_pid), "-f", f"softcache {stage}"], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.stdout.split() else None


def _kill_at(common: list[str], target: str, stage: str, artifact: Path, after_rename: bool,
             delay: float) -> dict:
    """Run ``make target`` and kill -9 its stage: at ``delay`` s after it starts, or as soon as ``artifact``
    appears (after_rename). Returns what was there at the kill and what Make said."""
    proc = _make(target, *common)
    pid = None
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < 120:
        pid = pid or _stage_pid(proc.pid, stage)
        if pid and (artifact.exists() if after_rename else time.monotonic() - start >= delay):
            break
        time.sleep(0.001)
    existed = artifact.exists()
    try:
        os.kill(pid, signal.SIGKILL) if pid else None
        killed = pid is not None
    except ProcessLookupError:
        killed = False
    _, err = proc.communicate(timeout=120)
    return {"killed_alive": killed, "existed_at_kill": existed, "make_deleted": "Deleting file" in err}


def _remove_run(run: Path) -> None:
    for f in run.iterdir():
        f.unlink()
    run.rmdir()


@pytest.fixture
def pipeline_dir(tmp_path):
    npz = tmp_path / "tiny.npz"
    save_prepared(make_dataset(n_train=400, n_test=200), npz)
    data = tmp_path / "data"
    common = [f"DATA_DIR={data}", f"DATASET={npz}", "DEVICE=cpu", "TEACHER_EPOCHS=1", "EPOCHS=2", "STUDENT=mlp",
              "THREADS=1"]
    assert _make("student", *common).wait() == 0
    return data, common


def test_twenty_kills_never_delete_or_leave_a_partial_artifact(pipeline_dir, capsys):
    data, common = pipeline_dir
    cache = next((data / "cache").glob("*.h5"))
    run = next((data / "runs").glob("*/metrics.json")).parent
    reference_logits = LogitCache(cache).logits("train").numpy()
    reference_weights = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    pick = random.Random(0)
    lifetime = {}                       # how long an uninterrupted make of each target takes, to aim inside it
    for target, remove in (("teacher-logits", lambda: cache.unlink()), ("student", lambda: _remove_run(run))):
        remove()
        start = time.monotonic()
        assert _make(target, *common).wait() == 0
        lifetime[target] = time.monotonic() - start
    trials = [("teacher-logits", cache, i < 3) for i in range(10)] + [("student", run / "metrics.json", i < 3)
                                                                       for i in range(10)]
    landed_after_rename, table = 0, []
    for target, artifact, after_rename in trials:
        stage = "teacher-logits" if target == "teacher-logits" else "student"
        if target == "teacher-logits":
            cache.unlink()
        else:
            _remove_run(run)
        outcome = _kill_at(common, target, stage, artifact, after_rename, pick.uniform(0.2, 0.9) * lifetime[target])
        table.append((target, "after the rename" if after_rename else "random", outcome))
        assert not outcome["make_deleted"], f"make deleted the finished artifact of {target}: {outcome}"
        if outcome["existed_at_kill"]:
            assert artifact.exists(), f"{target}: the finished artifact vanished after the kill"
            landed_after_rename += outcome["killed_alive"]
        if target == "student":          # whole or absent: never metrics.json without model.pt or the reverse
            assert (run / "metrics.json").exists() == (run / "model.pt").exists()
        rerun = _make(target, *common)
        _, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, err
        if target == "teacher-logits":
            np.testing.assert_array_equal(LogitCache(cache).logits("train").numpy(), reference_logits)
        else:
            weights = torch.load(run / "model.pt", weights_only=True)["state_dict"]
            assert all(torch.equal(weights[k], reference_weights[k]) for k in reference_weights)
        leftovers = [p.name for p in artifact.parent.parent.rglob(".*.tmp-*")]
        assert leftovers == [], leftovers       # temporaries of the killed writer are gone after the rerun
    with capsys.disabled():
        print("\n| stage | kill | alive at kill | finished file there at kill | make deleted it |")
        print("|---|---|---|---|---|")
        for target, when, o in table:
            print(f"| {target} | {when} | {o['killed_alive']} | {o['existed_at_kill']} | {o['make_deleted']} |")
    assert landed_after_rename >= 5, landed_after_rename
    assert sum(o["killed_alive"] for _, _, o in table) >= 15, table   # most kills hit a stage at work
