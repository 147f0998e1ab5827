"""Make for text, as for images: DATASET= picks the corpus, `make teacher-logits` builds the prepared text, the
language-model teacher and its per-token cache; a cache setting re-runs only the pass, a teacher setting
the teacher and the pass, and what a text corpus cannot use is refused by name before anything runs."""

from __future__ import annotations

import json

import h5py
import pytest

from tests.test_make import ROOT, fingerprint, make
from tests.test_text_data import write_docs

pytestmark = pytest.mark.slow


def _ran(proc) -> list[str]:
    """The stages a make run started, in order."""
    return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith(".venv/bin/softcache ")]


def test_make_builds_the_text_cache_and_reruns_only_what_changed(tmp_path):
    docs = write_docs(tmp_path / "docs", n=80)
    common = [f"DATASET={docs}", "TOKENIZER=bytes", f"DATA_DIR={tmp_path / 'd'}", "TEACHER_STEPS=20", "CONTEXT=16",
              "DEVICE=cpu", "THREADS=1"]
    first = make("teacher-logits", *common)
    assert _ran(first) == ["data", "lm-teacher", "token-logits"]
    text, teacher = tmp_path / "d/text/docs-bytes.h5", tmp_path / "d/teacher/docs-bytes-st20-c16/teacher.pt"
    cache = tmp_path / "d/cache/docs-bytes-st20-c16-c16-k16-float16-ts1_2_4.h5"
    with h5py.File(cache) as f:
        assert f.attrs["kind"] == "tokens" and f.attrs["complete"] and f.attrs["topk"] == 16
        assert list(f.attrs["temperatures"]) == [1.0, 2.0, 4.0] and f.attrs["context"] == 16
    before = {p: fingerprint(p) for p in (text, teacher, cache)}
    times = {text: text.stat().st_mtime_ns}
    before_time = times.__getitem__
    assert _ran(make("teacher-logits", *common)) == ["data"]      # nothing changed: the text re-checked, no more
    assert {p: fingerprint(p) for p in before} == before and text.stat().st_mtime_ns == before_time(text)
    assert _ran(make("teacher-logits", *common, "CACHE_TS=1 2", "CACHE_TOPK=4")) == ["data", "token-logits"]
    assert {p: fingerprint(p) for p in before} == before                       # a new cache beside the old one
    assert (tmp_path / "d/cache/docs-bytes-st20-c16-c16-k4-float16-ts1_2.h5").is_file()
    assert _ran(make("student", *common, "STEPS=8", "T=2", "ALPHA=0.5")) == ["data", "lm-student"]   # the cache made
    run = tmp_path / "d/runs/lm-small-T2-a0.5-from-st20-c16-s0-st8-on-docs-bytes"
    assert json.loads((run / "metrics.json").read_text())["test_bits_per_byte"] > 0
    assert _ran(make("student", *common, "STEPS=8", "T=1", "ALPHA=0.5")) == ["data", "lm-student"]   # the student
    assert {p: fingerprint(p) for p in before} == before
    assert _ran(make("teacher-logits", *common, "TEACHER_SEED=1")) == ["data", "lm-teacher", "token-logits"]
    assert fingerprint(text) == before[text]
    # another split seed is another text, beside this one; an edited document at the same path is noticed
    assert _ran(make("data", *common, "SPLIT_SEED=3")) == ["data"] and (tmp_path / "d/text/docs-bytes-split3.h5").is_file()
    (docs / "doc000.py").write_text("def edited():\n    return 1\n")
    assert _ran(make("teacher-logits", *common)) == ["data", "lm-teacher", "token-logits"]
    assert fingerprint(text) != before[text] and fingerprint(cache) != before[cache]


@pytest.mark.parametrize("setting, match", [
    ("VIEWS=4", "VIEWS applies to images, and DATASET=stdlib is text"),
    ("LABELS=600", "LABELS applies to images"),
    ("TOKENIZER=bpe-300", "no published LM teacher exists for DATASET=stdlib TOKENIZER=bpe-300"),
    ("CACHE_TS=1 1", "CACHE_TS must list 1 to 16 different temperatures"),
    ("TOKENIZER=words", "TOKENIZER must be bytes, bpe-N"),
])
def test_what_text_cannot_use_is_one_line_before_anything_runs(tmp_path, setting, match):
    proc = make("teacher-logits", "DATASET=stdlib", "TEACHER=published", f"DATA_DIR={tmp_path}", setting, check=False)
    assert proc.returncode == 2 and match in proc.stderr and not any(tmp_path.iterdir()), proc.stderr


@pytest.mark.parametrize("args, match", [
    (["sweep", "DATASET=stdlib"], "make sweep is built for images only, and DATASET=stdlib is text"),
    (["student", "DATASET=stdlib", "STUDENT=cnn-tiny"], "STUDENT=cnn-tiny is an image student"),
    (["student", "STEPS=100"], "STEPS applies to text"),
    (["student", "DATASET=stdlib", "T=3"], "T=3 is not in CACHE_TS=1 2 4"),
    (["student", "CACHE_TOPK=5", "T=3"], "T=3 is not in CACHE_TS=1 2 4"),          # an image top-k cache too
    (["publish", "DATASET=stdlib", "LIMIT=1000"], "publishes an LM teacher trained here on the whole corpus; drop LIMIT"),
    (["publish", "DATASET=stdlib", "TEACHER=published"], "trained here on the whole corpus; drop TEACHER"),
])
def test_what_crosses_images_and_text_is_refused_by_name(tmp_path, args, match):
    proc = make(*args, f"DATA_DIR={tmp_path}", check=False)
    assert proc.returncode == 2 and match in proc.stderr, proc.stderr


def test_limit_names_a_text_subset_that_never_replaces_the_whole(tmp_path):
    dry = make("-n", "teacher-logits", "DATASET=stdlib", "LIMIT=500000", f"DATA_DIR={tmp_path}").stdout
    assert "--limit '500000'" in dry and f"{tmp_path}/text/stdlib-n500000-bytes.h5" in dry
    assert f"{tmp_path}/teacher/stdlib-n500000-bytes/teacher.pt" in dry and not any(tmp_path.iterdir())


def test_a_text_grid_of_students_is_passed_as_given(tmp_path):
    dry = make("-n", "experiment-lm", "DATASET=stdlib", "STUDENTS=lm-tiny lm-medium", f"DATA_DIR={tmp_path}").stdout
    assert "--students 'lm-tiny lm-medium'" in dry


def test_the_text_demo_plans_the_whole_pipeline_from_the_published_teacher(tmp_path):
    """`make demo DATASET=stdlib`: the committed LM teacher's weights, a DEMO_LIMIT subset, two runs at a time;
    then data, the token pass, scratch and distilled students, their exports and the report, in that order."""
    assert (ROOT / "published/stdlib-bytes-lm-teacher.pt").is_file()       # committed: CPU users need not train it
    top = make("-n", "demo", "DATASET=stdlib", f"DATA_DIR={tmp_path}").stdout
    assert "demo-runs LIMIT=1000000 JOBS=2 TEACHER=published T=1 ALPHA=0.5" in top
    plan = make("-n", "demo-runs", "DATASET=stdlib", "LIMIT=1000000", "TEACHER=published", "T=1",
                "ALPHA=0.5", "SEED=2", f"DATA_DIR={tmp_path}").stdout
    assert _ran(type("P", (), {"stdout": plan})) == ["data", "token-logits", "lm-student", "export", "lm-student",
                                                     "export", "report"]
    assert "--teacher 'published/stdlib-bytes-lm-teacher.pt'" in plan
    for run in ("lm-small-a0-s2", "lm-small-T1-a0.5-from-published-s2"):       # scratch names no teacher
        assert f"--out-dir '{tmp_path}/runs/{run}-st1600-on-stdlib-n1000000-bytes'" in plan
    assert not any(tmp_path.iterdir())                                   # a dry run writes nothing
