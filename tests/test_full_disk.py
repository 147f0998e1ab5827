"""A full disk at the teacher pass, at the HDF5 assembly and at the student save: one line, exit 2, no
crash, and no temporary left once the same command succeeds with space again.

The disk is a real one: a small tmpfs mounted in a private mount namespace (``unshare -rm``, so no
root is needed and nothing outside the test sees it). The assembly case switches off the free-space
checks made before the pass, so the HDF5 writer itself meets the full disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import LogitsConfig, TeacherConfig
from pipeline.data.prepare import save_prepared
from pipeline.teacher.fit import train_teacher
from pipeline.teacher.logits_pass import write_teacher_logits
from tests.conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.needs_mount]

_STEPS = """
import json, subprocess, sys
from pathlib import Path
disk, args = Path(sys.argv[1]), json.loads(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + args["size"], "tmpfs", str(disk)], check=True)
results = []
for step in args["steps"]:
    if step.get("remount"):
        subprocess.run(["mount", "-o", "remount,size=" + step["remount"], str(disk)], check=True)
    proc = subprocess.run([sys.executable, "-c", step["code"]], capture_output=True, text=True, cwd=args["root"])
    left = sorted(str(p.relative_to(disk)) for p in disk.rglob(".*tmp-*"))
    results.append({"rc": proc.returncode, "stderr": proc.stderr, "temporaries": left,
                    "files": sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file())})
print(json.dumps(results))
"""

_NO_CHECKS = ("import pipeline.teacher.logits_pass, pipeline.cache.format, pipeline.training.run_dir\n"
              "for m in (pipeline.teacher.logits_pass, pipeline.cache.format, pipeline.training.run_dir): m.need_space = lambda *a, **k: None\n")


def _cli(args: list, checks: bool = True) -> str:
    return (("" if checks else _NO_CHECKS) + "import sys\nfrom stages.cli import main\n"
            f"sys.argv = ['softcache'] + {[str(a) for a in args]!r}\nmain()\n")


def _in_namespace(tmp_path: Path, size: str, steps: list[dict]) -> list[dict]:
    import json
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["unshare", "-rm", sys.executable, "-c", _STEPS, str(disk),
                           json.dumps({"size": size, "steps": steps, "root": str(ROOT)})],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _one_line_no_space(result: dict) -> None:
    errors = [line for line in result["stderr"].replace("\r", "\n").splitlines() if "error:" in line]
    assert result["rc"] == 2, result
    assert len(errors) == 1 and "no space left on" in errors[0] and "Traceback" not in result["stderr"], result
    assert result["temporaries"] == [], result


@pytest.fixture
def teacher_and_data(tmp_path):
    npz = tmp_path / "tiny.npz"
    save_prepared(make_dataset(n_train=3000, n_test=500), npz)
    teacher = tmp_path / "teacher"
    train_teacher(TeacherConfig(dataset=npz, out_dir=teacher, arch="cnn", epochs=1, device="cpu", batch_size=64),
                  progress=False)
    return npz, teacher / "teacher.pt"


def test_a_full_disk_at_the_pass_and_at_the_assembly_is_one_line(tmp_path, teacher_and_data):
    npz, teacher = teacher_and_data
    disk = tmp_path / "disk"
    pass_args = ["teacher-logits", "--teacher", teacher, "--dataset", npz, "--out", disk / "cache" / "tiny.h5",
                 "--device", "cpu", "--chunk-rows", "500"]
    before_pass, at_assembly, with_space = _in_namespace(tmp_path, "64k", [
        {"code": _cli(pass_args)},                          # checked before the pass: nothing computed
        {"code": _cli(pass_args, checks=False), "remount": "100k"},   # parts fit, the cache does not
        {"code": _cli(pass_args), "remount": "8m"},
    ])
    _one_line_no_space(before_pass)
    assert "need about" in before_pass["stderr"]
    _one_line_no_space(at_assembly)
    assert any(".tiny.h5.parts/" in f for f in at_assembly["files"])     # the computed parts are kept
    assert with_space["rc"] == 0, with_space["stderr"]
    assert with_space["files"] == ["cache/tiny.h5"] and with_space["temporaries"] == []


def test_a_full_disk_at_the_student_save_is_one_line(tmp_path, teacher_and_data):
    npz, teacher = teacher_and_data
    cache = tmp_path / "tiny.h5"
    write_teacher_logits(LogitsConfig(teacher=teacher, dataset=npz, out=cache, device="cpu"), progress=False)
    disk = tmp_path / "disk"
    args = ["student", "--cache", cache, "--dataset", npz, "--out-dir", disk / "runs" / "r", "--student", "mlp",
            "--epochs", "1", "--checkpoint-every", "0"]
    checked, unchecked, with_space = _in_namespace(tmp_path, "40k", [
        {"code": _cli(args)}, {"code": _cli(args, checks=False)}, {"code": _cli(args), "remount": "8m"}])
    _one_line_no_space(checked)
    _one_line_no_space(unchecked)                           # torch.save meets the full disk itself
    assert with_space["rc"] == 0, with_space["stderr"]
    assert sorted(with_space["files"]) == ["runs/r/metrics.json", "runs/r/model.pt"], with_space
    assert with_space["temporaries"] == []
