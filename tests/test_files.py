"""pipeline/files.py and pipeline/provenance.py: what killed writers leave is cleaned up without losing
a finished artifact, and every artifact says which code made it."""

import json
import os
import re
import subprocess
import sys

import pytest

from pipeline.files import _HOST, atomic_dir, atomic_path, remove_dead_temporaries
from pipeline.provenance import code_version, other_code
from pipeline.results.report import render_code_versions


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_writers_temporaries_go_and_a_live_writers_stay(tmp_path):
    final = tmp_path / "cache.h5"
    final.write_text("finished")
    dead, live = f"{_dead_pid()}@{_HOST}", f"{os.getpid()}@{_HOST}"
    (tmp_path / f".cache.h5.tmp-{dead}-abc").write_text("half")
    (tmp_path / f".cache.h5.tmp-{live}-def").write_text("being written")
    (tmp_path / f".other.h5.tmp-{dead}-xyz").write_text("another artifact's")
    elsewhere = f".cache.h5.tmp-{_dead_pid()}@elsewhere-ghi"     # only its own machine can tell it is dead
    (tmp_path / elsewhere).write_text("another machine's writer")
    removed = remove_dead_temporaries(final)
    assert [p.name for p in removed] == [f".cache.h5.tmp-{dead}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cache.h5", f".cache.h5.tmp-{live}-def", f".other.h5.tmp-{dead}-xyz", elsewhere])
    with atomic_path(final) as tmp:                # a writer cleans up before it starts
        assert live in tmp.name
        tmp.write_text("new")
    assert final.read_text() == "new"


def test_a_run_killed_between_its_two_renames_gets_its_old_directory_back(tmp_path):
    final = tmp_path / "run"
    old = tmp_path / f".run.old-{_dead_pid()}@{_HOST}"       # the old run moved aside, the new one never moved in
    old.mkdir()
    (old / "metrics.json").write_text("{}")
    remove_dead_temporaries(final)
    assert (final / "metrics.json").read_text() == "{}" and not old.exists()
    with atomic_dir(final) as tmp:
        (tmp / "metrics.json").write_text('{"new": 1}')
    assert json.loads((final / "metrics.json").read_text()) == {"new": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_artifacts_record_their_code_and_the_report_names_other_code(student_run, cache_file):
    from pipeline.cache.reader import LogitCache

    version = code_version()
    assert len(version["source_digest"]) == 12 and version["softcache_version"]
    metrics = json.loads((student_run / "metrics.json").read_text())
    assert {k: metrics[k] for k in version} == version
    assert {k: LogitCache(cache_file).attrs[k] for k in version} == version
    assert other_code(metrics) is None and render_code_versions([{**metrics, "run": "a"}]) == ""
    older = {**metrics, "source_digest": "0" * 12, "run": "b"}
    assert other_code(older) == f"softcache {version['softcache_version']}, sources {'0' * 12}"
    assert "1 of 2 runs were made by other code" in render_code_versions([{**metrics, "run": "a"}, older])
    assert other_code({}) == "an older softcache (no code version recorded)"


@pytest.mark.parametrize("values,message", [
    ([[-0.5, 0.5]], "outside [0, 1]"), ([[0.0, 300.0]], "outside [0, 255]"),
])
def test_float_images_outside_their_range_are_refused(values, message):
    import numpy as np

    from pipeline.data.prepare import as_nchw
    from pipeline.errors import UsageError

    x = np.zeros((3, 1, 2, 2), np.float32)
    x[2, 0, 0, :] = values[0]
    with pytest.raises(UsageError, match=rf"1 images hold values {re.escape(message)} \(the first is image 2"):
        as_nchw(x, "x_train")

