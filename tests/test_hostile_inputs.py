"""Hostile and careless inputs: files that would run code, settings that would become code, links planted
in a shared DATA_DIR, caches that point outside themselves or lie about their size, teachers that return
garbage. Every file is built here. Each case asserts: exit status 2 and one line (a ValueError for the
Python API), no traceback, no marker file created by a payload, nothing written outside its place, and
no finished artifact changed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.cache.ensemble import publish_cache
from pipeline.cache.reader import LogitCache
from pipeline.config import LogitsConfig, PublishConfig, StudentConfig
from pipeline.errors import UsageError
from pipeline.files import exclusive_writer
from pipeline.losses import kd_loss, kd_loss_from_log_targets
from pipeline.make_plan import INTERNAL
from pipeline.student.distill import train_student
from pipeline.teacher.logits_pass import write_teacher_logits
from pipeline.training.resume import TrainingState
from stages.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def assert_one_line(code, err, match=""):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Payload:
    """Unpickling this creates ``marker``: proof that a loader ran code from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- files that would run code ------------------------------------------------------------------

def _exported(path: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3))
    program = torch.export.export(model, (torch.rand(4, 1, 12, 12),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, path)
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin:
        entries = {name: zin.read(name) for name in zin.namelist()}
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in edit(entries).items():
            zout.writestr(name, data)
    return dst


def _pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _entry(entries, suffix):
    return next(name for name in entries if name.endswith(suffix))


def _pickled_weight(marker):
    def edit(e):
        key = _entry(e, "model_weights_config.json")
        config = json.loads(e[key])
        fqn = next(iter(config["config"]))
        config["config"][fqn]["use_pickle"] = True
        e[key] = json.dumps(config).encode()
        e[key.rsplit("/", 1)[0] + "/" + config["config"][fqn]["path_name"]] = _pickled(Payload(marker))
        return e
    return edit


def _opaque_constant(marker):
    def edit(e):
        key = _entry(e, "model_constants_config.json")
        e[key] = json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "use_pickle": False}}}).encode()
        e[key.rsplit("/", 1)[0] + "/opaque_obj_0"] = pickle.dumps(Payload(marker))
        return e
    return edit


def _sample_inputs(marker):
    def edit(e):
        e[_entry(e, "sample_inputs/model.pt")] = _pickled(Payload(marker))
        return e
    return edit


def _compiled_code(marker):
    def edit(e):
        root = next(iter(e)).split("/", 1)[0]
        e[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"
        return e
    return edit


CRAFTED = [_pickled_weight, _opaque_constant, _sample_inputs, _compiled_code]


def test_the_crafted_archives_are_real_attacks(tmp_path):
    """Without softcache's inspection torch.export.load runs the payloads: the cases below test something."""
    good = _exported(tmp_path / "good.pt2")
    ran = 0
    for craft in (_pickled_weight, _sample_inputs):
        marker = tmp_path / f"ran-{craft.__name__}"
        evil = _rewrite(good, tmp_path / "evil.pt2", craft(marker))
        try:
            torch.export.load(evil)
        except Exception:
            pass
        ran += marker.exists()
    assert ran == 2


@pytest.mark.parametrize("craft", CRAFTED, ids=lambda c: c.__name__.strip("_"))
def test_a_pt2_that_would_unpickle_is_refused_by_the_pass_and_by_verify(tmp_path, prepared, cache_file, capsys,
                                                                          craft):
    marker = tmp_path / "PAYLOAD-RAN"
    evil = _rewrite(_exported(tmp_path / "good.pt2"), tmp_path / "evil.pt2", craft(marker))
    out = tmp_path / "cache" / "evil.h5"
    code, _, err = run_cli(["teacher-logits", "--teacher", evil, "--dataset", prepared, "--out", out,
                            "--device", "cpu"], capsys)
    assert_one_line(code, err, "which loading would unpickle or run")
    before = sha(cache_file)
    code, _, err = run_cli(["verify", cache_file, "--dataset", prepared, "--teacher", evil], capsys)
    assert_one_line(code, err, "which loading would unpickle or run")
    assert not marker.exists() and not out.exists() and sha(cache_file) == before


def test_a_plain_pt2_still_teaches(tmp_path, prepared):
    good = _exported(tmp_path / "good.pt2")
    out = tmp_path / "cache" / "good.h5"
    write_teacher_logits(LogitsConfig(teacher=good, dataset=prepared, out=out, device="cpu"), progress=False)
    assert LogitCache(out).num_classes == 3


@pytest.mark.parametrize("body,spec,match", [
    ("raise RuntimeError('no GPU here')", "make", "raised RuntimeError: no GPU here"),
    ("def make(:\n    pass", "make", "raised SyntaxError"),
    ("import sys\nsys.exit(0)", "make", "raised SystemExit"),
    ("", "builtins:exit", "raised SystemExit"),
])
def test_a_factory_module_that_fails_or_exits_is_one_line(tmp_path, prepared, capsys, monkeypatch, body, spec,
                                                          match):
    name = f"hostile_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save({}, tmp_path / "w.pt")
    spec = spec if ":" in spec else f"{name}:{spec}"
    out = tmp_path / "cache" / "f.h5"
    code, _, err = run_cli(["teacher-logits", "--teacher", spec, "--teacher-weights", tmp_path / "w.pt",
                            "--dataset", prepared, "--out", out, "--device", "cpu"], capsys)
    assert_one_line(code, err, match)
    assert not out.exists()


# --- teachers that return garbage ---------------------------------------------------------------

class _Bad(torch.nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.linear = torch.nn.Linear(144, 3)

    def forward(self, x):
        z = self.linear(x.flatten(1))
        if self.how == "nan" and len(x) > 3:
            return z * float("nan")
        if self.how == "width" and len(x) > 3:        # right for the probe's batches of 2 and 3 only
            return z[:, :2]
        if self.how == "int":
            return z.long()
        return z


@pytest.mark.parametrize("how,match", [("nan", "returned NaN or Inf"), ("width", "returned shape"),
                                       ("int", "must return floating-point")])
def test_a_teacher_whose_batch_is_wrong_stops_the_pass_naming_the_rows(tmp_path, prepared, monkeypatch, how, match):
    (tmp_path / f"bad_teachers_{how}.py").write_text(
        "from tests.test_hostile_inputs import _Bad\n"
        f"def make():\n    return _Bad({how!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT))
    torch.save(_Bad(how).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "cache" / "bad.h5"
    cfg = LogitsConfig(teacher=f"bad_teachers_{how}:make", teacher_weights=tmp_path / "w.pt", dataset=prepared, out=out,
                       device="cpu")
    with pytest.raises(UsageError, match=match) as info:
        write_teacher_logits(cfg, progress=False)
    assert "on train rows 0-63" in str(info.value)
    assert not out.exists()


# --- caches that point outside themselves, lie about their size, or are malformed -----------------

def _copy(cache_file: Path, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(cache_file.read_bytes())
    return path


def _external_link(f, tmp):
    g = f["train"]
    del g["logits"]
    g["logits"] = h5py.ExternalLink(str(tmp / "victim.h5"), "/logits")


def _virtual(f, tmp):
    shape = f["train/logits"].shape
    with h5py.File(tmp / "victim.h5", "w") as v:
        v["logits"] = np.zeros(shape, np.float32)
    layout = h5py.VirtualLayout(shape=shape, dtype="float32")
    layout[:] = h5py.VirtualSource(str(tmp / "victim.h5"), "logits", shape=shape)
    del f["train/logits"]
    f["train"].create_virtual_dataset("logits", layout)


def _external_storage(f, tmp):
    shape = f["train/logits"].shape
    (tmp / "system-file").write_bytes(os.urandom(int(np.prod(shape)) * 4))
    del f["train/logits"]
    f["train"].create_dataset("logits", shape, dtype="float32", external=[(str(tmp / "system-file"), 0, h5py.h5f.UNLIMITED)])


def _shape_bomb(f, tmp):
    n = f["train/logits"].shape[0]
    del f["train/logits"]
    f["train"].create_dataset("logits", (n, 1 << 20), dtype="float32", chunks=(1, 1024))   # never written


def _class_bomb(f, tmp):
    f.attrs["num_classes"] = 1 << 27


def _split_is_a_dataset(f, tmp):
    del f["test"]
    f["test"] = np.zeros(3)


def _attribute_of_the_wrong_type(f, tmp):
    f.attrs["views"] = "eight"


def _digests_deleted(f, tmp):
    del f.attrs["digests"]


def _complete_is_not_true(f, tmp):
    f.attrs["complete"] = 1


CACHE_EDITS = [_external_link, _virtual, _external_storage, _shape_bomb, _class_bomb, _split_is_a_dataset,
               _attribute_of_the_wrong_type, _digests_deleted, _complete_is_not_true]


@pytest.mark.parametrize("edit", CACHE_EDITS, ids=lambda e: e.__name__.strip("_"))
def test_a_hostile_cache_is_refused_in_one_line_before_it_is_read(tmp_path, cache_file, capsys, edit):
    path = _copy(cache_file, tmp_path, "hostile.h5")
    with h5py.File(path, "r+") as f:
        edit(f, tmp_path)
    with pytest.raises(UsageError):
        LogitCache(path)
    for command in ("verify", "inspect"):
        code, _, err = run_cli([command, path], capsys)
        assert_one_line(code, err, f"cache {path}")


def test_a_cache_without_digests_is_accepted_only_when_asked_by_name(tmp_path, cache_file, capsys):
    path = _copy(cache_file, tmp_path, "old.h5")
    with h5py.File(path, "r+") as f:
        del f.attrs["digests"]
    code, _, err = run_cli(["verify", path], capsys)
    assert_one_line(code, err, "--trust-undigested-cache")
    code, out, _ = run_cli(["verify", path, "--trust-undigested-cache"], capsys)
    assert code == 0 and "accepted as asked" in out


def test_the_published_cache_proves_itself():
    cache = LogitCache(ROOT / "published" / "fashion-mnist.h5")
    assert cache.digests_checked and cache.attrs["published"] is True
    assert cache.fingerprint == json.loads((ROOT / "published" / "fashion-mnist.json").read_text())["fingerprint"]


def test_publish_never_replaces_a_published_cache_unless_asked_by_name(tmp_path, cache_file):
    out = tmp_path / "published" / "tiny.h5"
    out.parent.mkdir()
    out.write_bytes(b"committed")
    cfg = dict(cache=cache_file, out=out, command="make teacher-logits", device="cpu")
    with pytest.raises(UsageError, match="REPUBLISH=tiny"):
        publish_cache(PublishConfig(**cfg))
    assert out.read_bytes() == b"committed"
    publish_cache(PublishConfig(**cfg, replace="tiny"))
    assert LogitCache(out).attrs["published"] is True


# --- links planted in a shared DATA_DIR ---------------------------------------------------------

def test_a_planted_lock_link_is_refused_and_its_target_keeps_its_bytes(tmp_path):
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    out = tmp_path / "data" / "runs" / "r"
    out.parent.mkdir(parents=True)
    (out.parent / ".r.lock").symlink_to(victim)
    with pytest.raises(UsageError, match="symbolic link"):
        with exclusive_writer(out):
            pass
    assert victim.read_text() == "keep me"


def test_a_planted_resume_link_gets_nothing_written_into_it(tmp_path, prepared, cache_file):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "runs" / "cnn-tiny-T4-a0.9-s0-e2"
    out.parent.mkdir(parents=True)
    (out.parent / f".{out.name}.resume").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link"):
        train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=out, student="cnn-tiny", epochs=2,
                                    batch_size=16), progress=False)
    assert list(elsewhere.iterdir()) == [] and not out.exists()
    with pytest.raises(UsageError, match="symbolic link"):
        TrainingState(out, {}).restore(None)


def test_a_planted_parts_link_gets_nothing_written_into_it(tmp_path, prepared, teacher_dir):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "cache" / "c.h5"
    out.parent.mkdir()
    (out.parent / ".c.h5.parts").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link"):
        write_teacher_logits(LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=out,
                                          device="cpu"), progress=False)
    assert list(elsewhere.iterdir()) == [] and not out.exists()


# --- numbers with no sane range, and the public losses -------------------------------------------

def test_a_run_whose_loss_becomes_nan_stops_and_is_not_saved(tmp_path, prepared, cache_file):
    out = tmp_path / "runs" / "nan"
    with pytest.raises(UsageError, match="NaN or Inf"):
        train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=out, student="mlp", epochs=2,
                                    batch_size=16, lr=1e38), progress=False)
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("kwargs,match", [
    ({"T": 0.0}, "T must be a finite number > 0"),
    ({"T": float("inf")}, "T must be a finite number > 0"),
    ({"alpha": 2.0}, r"alpha must be a number in \[0, 1\]"),
    ({"teacher": torch.zeros(1, 5)}, "must have the student's shape"),
    ({"labels": torch.zeros(3, dtype=torch.long)}, "labels must be"),
])
def test_kd_loss_checks_its_arguments(kwargs, match):
    args = {"student": torch.randn(4, 5), "teacher": torch.randn(4, 5), "labels": torch.zeros(4, dtype=torch.long),
            "T": 4.0, "alpha": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        kd_loss(args["student"], args["teacher"], args["labels"], T=args["T"], alpha=args["alpha"])


def test_probabilities_given_as_log_targets_are_refused():
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.zeros(4, dtype=torch.long)
    kd_loss_from_log_targets(student, torch.log_softmax(teacher, -1), labels, T=2.0, alpha=0.5)    # fine
    with pytest.raises(ValueError, match="log-probabilities"):
        kd_loss_from_log_targets(student, torch.softmax(teacher, -1), labels, T=2.0, alpha=0.5)


# --- settings are data, never code: under make, make -n and make help ----------------------------

def _make(args, tmp_path, env=None, data_dir=True):
    extra = [f"DATA_DIR={tmp_path / 'data'}"] if data_dir else []
    return subprocess.run(["make", "--no-print-directory", *args, *extra], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MAKEFLAGS": "", **(env or {})}, timeout=60)


def _assert_refused(proc, marker: Path):
    lines = [line for line in proc.stderr.strip().splitlines() if "warning:" not in line]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not marker.exists(), "a payload ran"


FREE_TEXT = ["DATASET", "SOURCE", "TRANSFER", "TEACHER", "TEACHER_WEIGHTS", "STUDENT", "STUDENTS", "DEMO_STUDENTS",
             "RUN", "FORMATS", "SCHEDULER", "PUBLISH_DEVICE", "REPUBLISH", "VENV", "TORCH_SPEC", "T", "TS", "SEEDS"]


def test_no_setting_runs_code_from_the_command_line_or_the_environment(tmp_path):
    marker = tmp_path / "PAYLOAD-RAN"
    payloads = [f"x';touch {marker};'", f"$(shell touch {marker})", f"x`touch {marker}`", f"x;touch {marker};true",
                f"x\ninclude {marker}"]
    failures = []
    for name in FREE_TEXT:
        runs = [(["-n", "student", f"{name}={p}"], None) for p in payloads]
        runs += [(["help", f"{name}={payloads[1]}"], None), (["export", f"{name}={payloads[3]}"], None)]
        runs += [(["-n", "student"], {name: p}) for p in (payloads[0], payloads[1], payloads[4])]
        for args, env in runs:
            try:
                _assert_refused(_make(args, tmp_path, env=env), marker)
            except AssertionError as exc:
                failures.append(f"{name} {args} {env}: {exc}")
    assert not failures, "\n".join(failures[:5])


# Every character a path may hold (pipeline.settings._PATH_CHARS, a letter outside ASCII, a digit), in one name.
PATH_NAME = "PYTHON=a._+@~,=-\u00e9" + "1"


def _path_settings(tmp_path) -> list[list[str]]:
    """Each path-valued setting given a path that holds every character of the path alphabet (an existing
    file where the setting needs one), with what else it needs to be a valid command line."""
    home = tmp_path / PATH_NAME
    (home / "faces").mkdir(parents=True)
    for name in ("x.npz", "w.pt", "t.pt", "tok.json", "c.jsonl"):
        (home / name).write_bytes(b"{}")
    return [[f"DATA_DIR={home}/data"], [f"DATASET={home}/x.npz"], [f"SOURCE={home}/x.npz"],
            [f"TRANSFER={home}/x.npz"], [f"TEACHER={home}/t.pt"], ["TEACHER=mod:make", f"TEACHER_WEIGHTS={home}/w.pt"],
            [f"DATASET={home}/c.jsonl", f"TOKENIZER={home}/tok.json"], [f"VENV={home}/venv"],
            [f"DATASET={home}/faces"]]


def test_every_character_of_a_path_stays_part_of_the_path_in_every_path_setting(tmp_path):
    """Make reads a rule line that begins with a path holding '=' as an assignment: the planner's target
    lines once set stamps and run fields to nothing (and, with DATA_DIR=PYTHON=dir, set PYTHON)."""
    failures = []
    for given in _path_settings(tmp_path):
        proc = _make(["-n", "student", *given], tmp_path, data_dir=not given[0].startswith("DATA_DIR"))
        stamps = [line for line in proc.stdout.splitlines() if line.startswith("mkdir -p") and "printf" in line]
        student = [line for line in proc.stdout.splitlines() if " student " in line or " lm-student " in line]
        problems = [proc.returncode != 0 and proc.stderr.strip(), not stamps and "no stamp written",
                    any("printf '%s\\n' ''" in line for line in stamps) and "an empty stamp",
                    not student and "no student recipe",
                    student and ("--student ''" in student[0] or "--T ''" in student[0])
                    and "the run's fields came out empty"]
        value = given[-1].split("=", 1)[1]
        if not any(value in line for line in proc.stdout.splitlines()):
            problems.append(f"{value!r} never reaches a recipe whole")
        failures += [f"{given}: {p}" for p in problems if p]
    assert not failures, "\n".join(failures)


def test_a_data_dir_named_like_a_make_variable_sets_nothing(tmp_path):
    """DATA_DIR=PYTHON=evil once made `make help` run a file planted under evil/: build that attack in a copy
    of the Makefile and planner, plant a payload at every name the misread could execute, and run it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Makefile").write_bytes((ROOT / "Makefile").read_bytes())
    for name in ("pipeline", "pyproject.toml"):
        (repo / name).symlink_to(ROOT / name)
    marker = tmp_path / "PAYLOAD-RAN"
    for variable in ("PYTHON", "MAKE", "SHELL"):
        plan = subprocess.run(["make", "-n", "demo", f"DATA_DIR={variable}=evil"], cwd=repo, capture_output=True,
                              text=True, env={**os.environ, "MAKEFLAGS": ""}, timeout=60)
        for word in plan.stdout.split() + ["evil/params/data-fashion-mnist.txt:", "evil/runs"]:
            word = word.strip("'")
            if word.startswith("evil/"):
                planted = repo / (word if word.endswith(":") else word + ":")
                planted.parent.mkdir(parents=True, exist_ok=True)
                planted.write_text(f"#!/bin/sh\ntouch {marker}\n")
                planted.chmod(0o755)
        for goal in (["help"], ["-n", "demo"], ["-n", "student"]):
            proc = subprocess.run(["make", *goal, f"DATA_DIR={variable}=evil"], cwd=repo, capture_output=True,
                                  text=True, env={**os.environ, "MAKEFLAGS": ""}, timeout=60)
            assert not marker.exists(), f"{variable}: make {goal} ran a planted file"
            assert proc.returncode == 0, proc.stderr
    assert "usage: make" in subprocess.run(["make", "help", "DATA_DIR=PYTHON=evil"], cwd=repo, capture_output=True,
                                           text=True, env={**os.environ, "MAKEFLAGS": ""}, timeout=60).stdout


@pytest.mark.parametrize("given,match", [
    (["DATASET=bob's.npz"], "DATASET must be a path"),
    (["DATA_DIR="], "DATA_DIR must name a directory"),
    (["DATA_DIR=/"], "DATA_DIR must name a directory"),
    (["RUN=../../../dir"], "RUN must be one run directory's name"),
    (["CACHE=x.h5"], "CACHE is softcache's own"),
    (["SC=/bin/echo"], "SC is softcache's own"),
    (["SHELL=/bin/echo"], "SHELL is softcache's own"),
    (["T=1e200"], "T must be a number in [0.01, 100]"),
    (["T=1e-200"], "T must be a number in [0.01, 100]"),
    (["SEED=99999999999999999999"], "SEED must be a whole number"),
    (["IMAGE_SIZE=2"], "IMAGE_SIZE must be"),
    (["LIMIT=3000"], "drop LIMIT"),
    (["DATA_DIR=~/data"], "give the full path"),
    (["DATASET=~/x.npz"], "give the full path"),
    (["SC_TARGET_0=/bin/echo"], "softcache's own"),
    (["CACHE_TS=" + " ".join(str(1 + i / 100) for i in range(40))], "CACHE_TS must list 1 to 16"),
    (["CACHE_TS=1.0000000000001 2"], "at most 8 characters"),
])
def test_settings_that_would_reach_outside_are_refused(tmp_path, given, match):
    goal = "publish" if given == ["LIMIT=3000"] else "clean"
    proc = _make(["-n", goal, *given], tmp_path, data_dir=not any(g.startswith("DATA_DIR") for g in given))
    _assert_refused(proc, tmp_path / "none")
    assert match in proc.stderr, proc.stderr


def test_make_clean_plans_only_softcache_folders_inside_data_dir(tmp_path):
    plan = _make(["-n", "clean"], tmp_path).stdout
    removed = plan.split("rm -rf", 1)[1].split()
    assert removed and all(p.strip("'").startswith(f"{tmp_path / 'data'}/") for p in removed), plan


def test_oversubscribed_threads_are_capped_with_a_note(tmp_path):
    proc = _make(["-n", "student", "THREADS=64", "JOBS=64"], tmp_path)
    assert proc.returncode == 0 and "running JOBS=" in proc.stderr
    assert f"--threads '{max(1, (os.cpu_count() or 1) // min(64, os.cpu_count() or 1))}'" in proc.stdout


def test_every_variable_the_makefile_sets_for_itself_is_refused_from_the_command_line():
    text = (ROOT / "Makefile").read_text()
    import re
    own = set(re.findall(r"^(?:override )?([A-Z_]+) *(?::=|=|\?=)", text, re.M)) - {"PYTHON"}
    assert own and own <= INTERNAL, own - INTERNAL


# --- careless inputs that used to end in a traceback -------------------------------------------------------

def _npz(path: Path, x_train: np.ndarray, x_test: np.ndarray) -> Path:
    np.savez(path, x_train=x_train, y_train=np.arange(len(x_train)) % 2, x_test=x_test,
             y_test=np.arange(len(x_test)) % 2)
    return path


def _inflating_npz(path: Path) -> Path:
    """A few kilobytes whose x_train header declares 10^12 bytes: numpy would allocate what it says."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (4_000_000, 500, 500)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_train.npy", header.getvalue() + bytes(1 << 20))
        for name, value in {"y_train": np.zeros(4, np.int64), "x_test": np.zeros((2, 8, 8), np.uint8),
                            "y_test": np.zeros(2, np.int64)}.items():
            body = io.BytesIO()
            np.save(body, value)
            z.writestr(f"{name}.npy", body.getvalue())
    return path


def test_careless_datasets_are_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = lambda n, s: rng.integers(0, 255, (n, s, s), dtype=np.uint8)   # noqa: E731
    no_train = _npz(tmp_path / "no-train.npz", images(0, 8), images(4, 8))
    code, _, err = run_cli(["data", "--dataset", no_train, "--out", tmp_path / "a.npz"], capsys)
    assert_one_line(code, err, "the train split holds no images")
    code, _, err = run_cli(["data", "--dataset", _inflating_npz(tmp_path / "bomb.npz"), "--out", tmp_path / "b.npz"],
                           capsys)
    assert_one_line(code, err, "declares (4000000, 500, 500) uint8, more than the file holds")
    long_name = tmp_path / ("a" * 300 + ".npz")
    code, _, err = run_cli(["data", "--dataset", long_name, "--out", tmp_path / "c.npz"], capsys)
    assert_one_line(code, err, "use a shorter path")
    tiny = _npz(tmp_path / "two-by-two.npz", images(8, 2), images(4, 2))
    assert run_cli(["data", "--dataset", tiny, "--out", tmp_path / "tiny.npz"], capsys)[0] == 0
    code, _, err = run_cli(["teacher", "--dataset", tmp_path / "tiny.npz", "--out-dir", tmp_path / "t",
                            "--arch", "cnn", "--epochs", "1", "--device", "cpu"], capsys)
    assert_one_line(code, err, "the teacher 'cnn' cannot take images of shape (1, 2, 2)")
    assert not (tmp_path / "t" / "teacher.pt").exists()
    assert not any((tmp_path / n).exists() for n in ("a.npz", "b.npz", "c.npz"))


def test_arrays_that_would_not_fit_in_memory_are_refused_before_they_are_inflated(tmp_path, monkeypatch):
    """An honest .npz larger than this machine's memory (the limit is lowered to 1 KB here, so the test
    needs no gigabytes) is refused by its headers, and so is an IDX .gz whose header declares too much."""
    from pipeline.data import prepare as datasets
    path = _npz(tmp_path / "big.npz", np.zeros((4, 32, 32), np.uint8), np.zeros((2, 32, 32), np.uint8))
    monkeypatch.setattr(datasets, "_memory_bytes", lambda: 1024)
    with pytest.raises(UsageError, match="GiB once inflated, more than this machine's memory"):
        datasets.load_npz(path)
    idx = tmp_path / "train-images-idx3-ubyte.gz"
    datasets.write_idx(idx, np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(UsageError, match="which this machine's memory cannot hold"):
        datasets.read_idx(idx)


def test_a_file_name_that_is_not_utf8_is_named_in_one_line(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "folder" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    os.rename(tmp_path / "folder" / "train" / "a" / "0.png", os.fsencode(tmp_path / "folder" / "train" / "a") + b"/\xff.png")
    code, _, err = run_cli(["data", "--dataset", tmp_path / "folder", "--out", tmp_path / "p.h5"], capsys)
    assert_one_line(code, err, r"the file name b'train/a/\xff.png' is not UTF-8 text")
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.parametrize("text,match", [("[1, 2]", "holds a list, not an object"), ("{not json", "is not a JSON record"),
                                        ('{"student": "mlp"}', "is not the record of a run softcache finished")])
def test_a_foreign_metrics_file_in_runs_is_named_by_the_report(tmp_path, capsys, text, match):
    run = tmp_path / "runs" / "someone-elses"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(text)
    code, _, err = run_cli(["report", "--runs", tmp_path / "runs", "--out", tmp_path / "report.md"], capsys)
    assert_one_line(code, err, match)
    assert not (tmp_path / "report.md").exists()
