"""The Make wiring on real Fashion-MNIST (a 2000-image subset): the stage graph builds from
nothing, and changing a student parameter re-runs only the student."""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ON = "-on-fashion-mnist-n2000"   # runs on the LIMIT=2000 subset say so in their names
pytestmark = pytest.mark.slow


def make(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MAKEFLAGS": ""})
    if check and proc.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_stage_graph_rebuilds_only_what_changed(tmp_path):
    common = ["LIMIT=2000", "TEACHER_EPOCHS=1", "EPOCHS=1", "DEVICE=cpu", f"DATA_DIR={tmp_path}", "STUDENT=mlp"]
    first = make("student", "T=4", "ALPHA=0.9", *common)
    for stage in ("softcache data", "softcache teacher ", "softcache teacher-logits", "softcache student"):
        assert stage in first.stdout
    # TEACHER_EPOCHS=1 is not the default teacher, so it has its own directory and cache name.
    cache = tmp_path / "cache" / "fashion-mnist-n2000-e1-T1-float32.h5"
    teacher = tmp_path / "teacher" / "fashion-mnist-n2000-e1" / "teacher.pt"
    before = fingerprint(cache), fingerprint(teacher)
    run4 = tmp_path / "runs" / f"mlp-T4-a0.9-from-e1-s0-e1{ON}" / "metrics.json"
    metrics = json.loads(run4.read_text())
    assert metrics["test_acc"] > 0.3 and metrics["teacher_test_acc"] > 0.3   # chance is 0.1

    second = make("student", "T=8", "ALPHA=0.5", *common)
    assert "softcache student" in second.stdout
    for stage in ("softcache data", "softcache teacher ", "softcache teacher-logits"):
        assert stage not in second.stdout
    assert (fingerprint(cache), fingerprint(teacher)) == before
    assert run4.is_file() and (tmp_path / "runs" / f"mlp-T8-a0.5-from-e1-s0-e1{ON}" / "metrics.json").is_file()

    # A sweep through make: the grid from the same cache, teacher and cache untouched.
    sweep = make("sweep", "STUDENTS=mlp", "TS=2 4", "ALPHAS=0 0.5", "SEEDS=0 1", "JOBS=2", *common)
    assert "softcache teacher" not in sweep.stdout and "6 runs: 6 trained" in sweep.stdout
    assert (fingerprint(cache), fingerprint(teacher)) == before
    assert (tmp_path / "reports" / "sweep.csv").read_text().count("\n") == 7

    # Up to date now: nothing but the (silent, content-compared) parameter stamps would run.
    assert "softcache" not in make("-n", "student", "T=8", "ALPHA=0.5", *common).stdout
    # A cache setting rebuilds only the cache; a teacher setting rebuilds teacher and cache.
    dry = make("-n", "student", "ALPHA=0.9", "CACHE_DTYPE=float16", *common).stdout
    assert "softcache teacher-logits" in dry and "softcache teacher " not in dry
    dry = make("-n", "student", "T=8", "ALPHA=0.5", *common[:1], "TEACHER_EPOCHS=2", *common[2:]).stdout
    assert "softcache teacher " in dry and "softcache teacher-logits" in dry
    # ...and those dry runs changed nothing: with the original settings all is still up to date.
    assert "softcache" not in make("-n", "student", "T=8", "ALPHA=0.5", *common).stdout
    assert make("-q", "student", "T=8", "ALPHA=0.5", *common, check=False).returncode == 0

    # Edge export of a real run, checked on the full Fashion-MNIST test set (10,000 images).
    make("export", f"RUN=mlp-T4-a0.9-from-e1-s0-e1{ON}", *common)
    export = json.loads((tmp_path / "runs" / f"mlp-T4-a0.9-from-e1-s0-e1{ON}" / "export" / "export.json").read_text())
    assert export["parity"]["onnx"]["max_abs_diff"] <= 1e-4 and export["parity"]["onnx"]["argmax_agreement"] == 1
    assert export["parity"]["pt2"]["argmax_agreement"] == 1
    assert abs(export["int8_acc_change_pp"]) <= 0.5 and export["int8_size_ratio"] <= 0.35
    assert export["test_acc"]["eager"] == pytest.approx(metrics["test_acc"], abs=1e-3)

    # Cached views: VIEWS=2 builds a second cache from the same teacher; REPLAY=2 trains on it.
    views = make("student", "VIEWS=2", "REPLAY=2", "T=2", "ALPHA=0.5", *common)
    assert "softcache teacher-logits" in views.stdout and "softcache teacher " not in views.stdout
    assert "2000 train + 10000 test rows + 4000 cached views" in views.stdout
    replayed = json.loads((tmp_path / "runs" / f"mlp-T2-a0.5-from-e1-v2-r2-s0-e1{ON}" / "metrics.json").read_text())
    assert replayed["inputs"] == "2 cached views" and replayed["test_acc"] > 0.3
    assert (fingerprint(cache), fingerprint(teacher)) == before
    # The whole experiment, tiny: tuning on 500 held-out rows, then three arms x two seeds.
    experiment = make("experiment-views", "VIEWS=2", "STUDENTS=mlp", "SEEDS=0 1", "TS=2 4", "ALPHAS=0.5",
                      "EXPERIMENT_HOLDOUT=500", *common)
    assert "softcache teacher" not in experiment.stdout.replace("softcache experiment-views", "")
    assert len(list((tmp_path / "tuning").glob(f"mlp-*-ho500-s0-e1{ON}/metrics.json"))) == 5
    record = json.loads((tmp_path / "reports" / "views-experiment-from-e1-v2.json").read_text())
    assert {r["arm"] for r in record["arms"]} == {"scratch", "clean", "replay"}
    assert all(r["seeds"] == [0, 1] for r in record["arms"])
    assert "Cached views from e1-v2: scratch vs clean-target KD" in (tmp_path / "reports" / "report.md").read_text()

    # An ensemble of two teachers with a mixup bank: the member already trained is reused, only
    # the new member is trained; COMBINE=probs learns from the mean of their probabilities.
    ens = make("student", "TEACHERS=2", "VIEWS=2", "MIXUP=1", "REPLAY=2", "T=2", "ALPHA=1", "COMBINE=probs", *common)
    assert ens.stdout.count("softcache teacher --") == 1 and "--seed '1'" in ens.stdout
    assert ens.stdout.count("softcache teacher-logits") == 2 and "softcache ensemble" in ens.stdout
    assert "ensemble of 2 test accuracy" in ens.stdout
    assert (fingerprint(cache), fingerprint(teacher)) == before
    run = json.loads((tmp_path / "runs" / f"mlp-T2-a1-from-e1-x2-v2-mx1-probs-r2-s0-e1{ON}" / "metrics.json").read_text())
    assert run["teacher_members"] == 2 and run["mixup"] == 1.0 and run["test_acc"] > 0.3
    assert "softcache" not in make("-n", "student", "TEACHERS=2", "VIEWS=2", "MIXUP=1", "REPLAY=2", "T=2",
                                   "ALPHA=1", "COMBINE=probs", *common).stdout
    verify = subprocess.run([str(ROOT / ".venv/bin/softcache"), "verify", str(tmp_path / "cache" /
                             "fashion-mnist-n2000-e1-x2-T1-float32-v2-mx1.h5")], capture_output=True, text=True)
    assert verify.returncode == 0 and "as recorded" in verify.stdout
    # Bad input through make: one line naming the fix, exit 2, nothing trained.
    # (The published cache was made from the whole dataset, so it cannot teach a 2000-image subset.)
    published = "cannot teach LIMIT=2000 rows"
    for bad, message in ((["COMBINE=5", "TEACHERS=2", "VIEWS=2", "MIXUP=1"], "member 5 is missing"),
                         (["TEACHERS=2", "CACHE_TOPK=3"], "stores every logit"),
                         (["TEACHER=published"], published)):
        proc = make("student", *bad, *common, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (bad, proc.stderr)

    readme = (ROOT / "README.md").read_bytes()
    report = make("report", *common)
    assert "| mlp |" in report.stdout and (tmp_path / "reports" / "report.md").is_file()
    assert (tmp_path / "reports" / "acc_vs_T.png").is_file()
    assert (ROOT / "README.md").read_bytes() == readme   # only a report over data/ rewrites the README
    assert f"| mlp-T4-a0.9-from-e1-s0-e1{ON} |" in report.stdout   # the edge-export table


def test_bad_make_variable_is_one_line_and_exit_2(tmp_path):
    proc = make("student", "T=-1", "DEVICE=cpu", f"DATA_DIR={tmp_path}", "LIMIT=500", "TEACHER_EPOCHS=1",
                "STUDENT=nope", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "T must be a number in [0.01, 100], got -1" in proc.stderr
    assert not tmp_path.joinpath("params").exists()   # refused before any stamp was written


def test_demo_uses_the_published_teacher_only_where_it_applies(tmp_path):
    """The committed published cache serves the full Fashion-MNIST demo; a subset, or a teacher the
    user names, trains here. (Dry runs: nothing is built.)"""
    def demo_line(*args) -> str:
        out = make("-n", "demo", f"DATA_DIR={tmp_path}", *args).stdout.splitlines()
        return next(line for line in out if "demo-runs" in line)

    published = (ROOT / "published" / "fashion-mnist.h5").is_file()
    assert ("TEACHER=published T=1 ALPHA=0.5" in demo_line()) == published
    for other in (["LIMIT=2000"], ["TEACHER=auto"], ["TEACHER_EPOCHS=30"], ["TEACHERS=3"]):
        assert "TEACHER=published" not in demo_line(*other), other


def test_a_limited_quick_run_replaces_nothing_of_the_full_one(tmp_path):
    """The README's sequence: a full demo, then the quick LIMIT example, then the full run again,
    which must find everything up to date (Make's own dry run) and untouched (mtimes)."""
    from pipeline.data.prepare import save_prepared
    from tests.conftest import make_dataset

    npz = tmp_path / "tiny.npz"
    save_prepared(make_dataset(n_train=300, n_test=60), npz)
    common = [f"DATA_DIR={tmp_path / 'data'}", f"DATASET={npz}", "DEVICE=cpu", "DEMO_STUDENTS=mlp",
              "FORMATS=onnx,torchscript"]
    make("demo", *common)
    built = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert any("/runs/mlp-scratch-s0-e5-on-tiny/" in str(p) for p in built)
    quick = make("student", "T=4", "LIMIT=100", "TEACHER_EPOCHS=1", "EPOCHS=1", *common)
    assert "softcache teacher " in quick.stdout and "tiny-n100" in quick.stdout
    again = make("-n", "demo", *common)      # only the (phony) report would run
    assert [line for line in again.stdout.splitlines() if "softcache " in line and " report " not in line] == []
    assert {p: p.stat().st_mtime_ns for p in built} == built


def test_a_transfer_set_through_make_from_pool_to_student(tmp_path):
    """LABELS=0 with a transfer set of real images: the teacher scores the pool once, a student learns from
    the teacher alone, and a changed pool rebuilds the cache, never the teacher."""
    import numpy as np

    from pipeline.data.prepare import DEBIAN_DIR, load_dataset

    d = load_dataset("fashion-mnist", None, ROOT / "data" / "raw", DEBIAN_DIR, download=False)
    pool = tmp_path / "pool.npz"
    np.savez(pool, x=d.x_train[2000:3000])
    common = ["LIMIT=2000", "TEACHER_EPOCHS=1", "EPOCHS=1", "DEVICE=cpu", f"DATA_DIR={tmp_path}", "STUDENT=mlp",
              f"TRANSFER={pool}", "LABELS=0", "ALPHA=1"]
    make("student", *common)
    cache = tmp_path / "cache" / "fashion-mnist-n2000-e1-T1-float32-tr_pool.h5"
    metrics = json.loads((tmp_path / "runs" / f"mlp-T4-a1-from-e1-l0-tr_pool-s0-e1{ON}" / "metrics.json")
                         .read_text())
    assert cache.is_file() and metrics["transfer_rows"] == 1000 and metrics["labels"] == 0
    assert metrics["test_acc"] > 0.3                                          # chance is 0.1
    assert "softcache" not in make("-n", "student", *common).stdout          # up to date
    np.savez(pool, x=d.x_train[3000:4000])                                   # another pool, same name
    dry = make("-n", "student", *common).stdout
    assert "softcache teacher-logits" in dry and "softcache teacher " not in dry


def test_make_student_teacher_t_2_keeps_the_teacher_t_1_run(tmp_path):
    """TEACHER_T changes the cache, so it names the run: the TEACHER_T=1 run is kept, untouched, each
    run's metrics name its own cache, and both are up to date afterwards."""
    from pipeline.data.prepare import save_prepared
    from tests.conftest import make_dataset

    npz = tmp_path / "tiny.npz"
    save_prepared(make_dataset(n_train=300, n_test=60), npz)
    common = [f"DATA_DIR={tmp_path / 'data'}", f"DATASET={npz}", "DEVICE=cpu", "TEACHER_EPOCHS=1", "EPOCHS=1",
              "STUDENT=mlp", "T=4"]
    make("student", *common)
    first = tmp_path / "data" / "runs" / "mlp-T4-a0.1-from-e1-s0-e1-on-tiny"
    kept = fingerprint(first / "metrics.json"), fingerprint(first / "model.pt")
    make("student", "TEACHER_T=2", *common)
    second = tmp_path / "data" / "runs" / "mlp-T4-a0.1-from-e1-tt2-s0-e1-on-tiny"
    assert (fingerprint(first / "metrics.json"), fingerprint(first / "model.pt")) == kept
    assert json.loads((first / "metrics.json").read_text())["config"]["cache"].endswith("-T1-float32.h5")
    assert json.loads((second / "metrics.json").read_text())["config"]["cache"].endswith("-T2-float32.h5")
    for extra in ([], ["TEACHER_T=2"]):
        assert "softcache" not in make("-n", "student", *extra, *common).stdout
