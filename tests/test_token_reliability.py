"""The per-token pass as a real process: kill -9 at random instants resumes to identical bytes (10 of 10),
two torchrun ranks write the one-process file, and a full disk is one line with nothing half-written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.cache.format import ATTRS_DIGEST, read_arrays
from pipeline.teacher.pass_parts import parts_dir
from tests.test_full_disk import _cli, _in_namespace, _one_line_no_space
from tests.test_lm_teacher import text_file  # noqa: F401  (the fixture)
from tests.test_token_pass import lm_teacher  # noqa: F401  (the fixture)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _pass_args(teacher: Path, text: Path, out: Path) -> list[str]:
    return ["token-logits", "--teacher", str(teacher), "--text", str(text), "--out", str(out), "--topk", "8",
            "--temperatures", "1 2", "--batch-size", "2", "--chunk-windows", "3", "--device", "cpu", "--threads", "1"]


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.cli", *args], capture_output=True, text=True, env=ENV, **kw)


def _value_digests(path: Path) -> dict:
    with h5py.File(path) as f:
        digests = json.loads(f.attrs["digests"])
    digests.pop(ATTRS_DIGEST)            # the attributes hold the creation time and the pass's seconds
    return digests


def _same_values(a: Path, b: Path) -> None:
    x, y = read_arrays(a), read_arrays(b)
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    assert _value_digests(a) == _value_digests(b)


def test_two_torchrun_ranks_write_the_one_process_cache(tmp_path, lm_teacher, text_file):  # noqa: F811
    one = _run(_pass_args(lm_teacher, text_file, tmp_path / "one.h5"))
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "stages.cli",
                          *_pass_args(lm_teacher, text_file, tmp_path / "two.h5")], capture_output=True, text=True, env=ENV)
    assert two.returncode == 0, two.stderr[-2000:]
    _same_values(tmp_path / "one.h5", tmp_path / "two.h5")
    assert not parts_dir(tmp_path / "two.h5").exists() and two.stdout.count("windows in") == 1


@pytest.mark.slow
def test_ten_kills_at_random_instants_resume_to_identical_bytes(tmp_path, lm_teacher, text_file):  # noqa: F811
    whole = tmp_path / "whole.h5"
    started = time.perf_counter()
    assert _run(_pass_args(lm_teacher, text_file, whole)).returncode == 0
    lifetime = time.perf_counter() - started
    pick = random.Random(0)
    for attempt in range(10):
        out = tmp_path / f"killed-{attempt}.h5"
        proc = subprocess.Popen([sys.executable, "-m", "stages.cli", *_pass_args(lm_teacher, text_file, out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(pick.uniform(0.3, 0.95) * lifetime)
        killed = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL) if killed else None
        proc.wait()
        if killed:
            assert not out.exists() or _value_digests(out) == _value_digests(whole)   # never half-written
        rerun = _run(_pass_args(lm_teacher, text_file, out))
        assert rerun.returncode == 0, rerun.stderr
        _same_values(whole, out)
        assert not parts_dir(out).exists()


@pytest.mark.slow
@pytest.mark.needs_mount
def test_a_full_disk_at_the_token_pass_is_one_line(tmp_path, lm_teacher, text_file):  # noqa: F811
    out = tmp_path / "disk" / "cache" / "tokens.h5"
    args = _pass_args(lm_teacher, text_file, out)
    before, with_space = _in_namespace(tmp_path, "16k", [{"code": _cli(args)}, {"code": _cli(args), "remount": "8m"}])
    _one_line_no_space(before)
    assert "need about" in before["stderr"] and "cache/tokens.h5" not in before["files"]   # refused before the pass
    assert with_space["rc"] == 0, with_space["stderr"]
    assert with_space["files"] == ["cache/tokens.h5"] and with_space["temporaries"] == []


_NO_TEXT_CHECKS = ("import pipeline.teacher.lm_pass, pipeline.cache.lm_format, pipeline.data.windows\n"
                   "for m in (pipeline.teacher.lm_pass, pipeline.cache.lm_format, pipeline.data.windows): "
                   "m.need_space = lambda *a, **k: None\n")


@pytest.mark.slow
@pytest.mark.needs_mount
def test_a_full_disk_met_by_the_token_writer_and_the_prepared_text_is_one_line(  # noqa: F811
        tmp_path, lm_teacher, text_file):  # noqa: F811
    """With the free-space checks made before writing switched off, the HDF5 writers themselves meet the full
    disk: the token cache's assembly (its parts fit, the file does not) and the prepared text. Each reserves
    its space before HDF5 writes a byte, so each is one line, never a segmentation fault."""
    reference = tmp_path / "reference.h5"
    assert _run(_pass_args(lm_teacher, text_file, reference)).returncode == 0
    size = reference.stat().st_size
    out = tmp_path / "disk" / "cache" / "tokens.h5"
    docs = tmp_path / "big-docs"
    docs.mkdir()
    for i in range(80):
        (docs / f"doc{i:03d}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 60)
    data = ["data", "--dataset", str(docs), "--tokenizer", "bytes", "--out", str(tmp_path / "disk" / "text" / "d.h5")]
    assembly, text, with_space = _in_namespace(tmp_path, f"{int(size * 1.6) // 1024 + 8}k", [
        {"code": _NO_TEXT_CHECKS + _cli(_pass_args(lm_teacher, text_file, out))},
        {"code": _NO_TEXT_CHECKS + _cli(data), "remount": f"{int(size * 1.6) // 1024 + 40}k"},
        {"code": _cli(_pass_args(lm_teacher, text_file, out)) + "\n", "remount": "16m"},
    ])
    _one_line_no_space(assembly)
    assert any(".tokens.h5.parts/" in f for f in assembly["files"]), assembly     # the computed parts are kept
    _one_line_no_space(text)
    assert not any(f.startswith("text/") for f in text["files"]), text
    assert with_space["rc"] == 0, with_space["stderr"]
    assert "cache/tokens.h5" in with_space["files"] and with_space["temporaries"] == []
