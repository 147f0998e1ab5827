"""pipeline/names.py and pipeline/settings.py: one table of settings, one spelling of every name, a parser
that inverts it, and Make asking them."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from pathlib import Path

import pytest

from pipeline import make_plan, names, settings
from pipeline.config import StudentConfig, SweepConfig
from pipeline.errors import UsageError
from pipeline.experiments.sweep import plan_sweep

ROOT = Path(__file__).resolve().parents[1]


def make(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MAKEFLAGS": ""})


TAGS = ("", "-e30", "-resnet18-e30-s1-x3", "-published", "-model_pt", "-my_mod-make_teacher", "-x2")


def test_run_names_round_trip_over_a_grid():
    grid = itertools.product(("mlp", "cnn-tiny", "cnn-small"), (1.0, 4.0, 2.5, 1e-05, 12.0), (0.0, 0.5, 1.0, 0.125),
                             (0, 3), (1, 15), ((0, False), (8, False), (0, True)), (0, 5000), TAGS,
                             ("logits", "probs", "2"), ("", "fashion-mnist-n3000", "my-data-s0-e1"),
                             ((None, ""), (0, ""), (1200, "pool"), (None, "unlabelled_rest")))
    seen = set()
    for student, T, alpha, seed, epochs, (replay, augment), holdout, teacher, combine, data, (labels, transfer) in grid:
        x = names.RunName(student, T, alpha, seed, epochs, replay=replay, augment=augment, holdout=holdout,
                          teacher=teacher, combine=combine, data=data, labels=labels, transfer=transfer)
        name = str(x)
        assert names.parse_run_name(name) == x, name
        seen.add(name)
    assert len(seen) > 1000


def test_labels_and_transfer_set_name_distinct_runs():
    plain = names.RunName("mlp", 4.0, 0.5, 0, 5)
    few = names.RunName("mlp", 4.0, 0.5, 0, 5, labels=1200)
    pooled = names.RunName("mlp", 4.0, 0.5, 0, 5, labels=1200, transfer="my-pool.npz")
    assert len({str(plain), str(few), str(pooled)}) == 3
    assert str(pooled) == "mlp-T4-a0.5-l1200-tr_my_pool-s0-e5"
    # scratch never sees the transfer rows, so the transfer set is not part of its name; its labels are
    assert str(names.RunName("mlp", 4.0, 0, 0, 5, labels=600, transfer="pool")) == "mlp-scratch-l600-s0-e5"


def test_scratch_runs_drop_what_does_not_change_them():
    a = names.RunName("mlp", 4.0, 0.0, 0, 5, teacher="-e30", combine="probs")
    assert str(a) == "mlp-scratch-s0-e5" and a == names.RunName("mlp", 8.0, 0, 0, 5)


@pytest.mark.parametrize("spelling", ["4", "4.0", "4.00"])
def test_every_spelling_of_a_number_names_one_run(spelling):
    assert settings.number(float(spelling)) == "4"
    assert names.run_name("mlp", float(spelling), 0.90, 0, 5) == "mlp-T4-a0.9-s0-e5"


@pytest.mark.parametrize("method, knobs", [("pskd", {"alpha_T": 0.8}), ("pskd", {"alpha_T": 1.0}),
                                           ("byot", {"alpha": 0.1, "beta": 1e-06, "T": 3.0}),
                                           ("cskd", {"lambda": 1.0, "T": 4.0})])
def test_self_distillation_names_round_trip(method, knobs):
    for student, seed, epochs, data, labels, holdout in itertools.product(
            ("mlp", "cnn-tiny", "timm:resnet18"), (0, 2), (1, 10), ("", "tiny"), (None, 1200), (0, 5000)):
        name = names.self_run_name(student, method, knobs, seed, epochs, data, labels=labels, holdout=holdout)
        assert names.parse_self_run_name(name) == {
            "student": names.student_tag(student), "method": method, "knobs": knobs, "labels": labels,
            "holdout": holdout, "seed": seed, "epochs": epochs, "data": data}


def test_self_distillation_names_keep_the_pskd_spelling_of_earlier_runs():
    assert names.self_run_name("cnn-tiny", "pskd", {"alpha_T": 0.8}, 0, 5) == "cnn-tiny-pskd-a0.8-s0-e5"
    with pytest.raises(UsageError, match="not a self-distillation run name"):
        names.parse_self_run_name("cnn-tiny-byot-a0.1-s0-e5")     # BYOT's beta and T missing


def test_a_name_that_is_no_run_is_refused():
    with pytest.raises(UsageError, match="not a softcache student run name"):
        names.parse_run_name("notes.txt")


def test_make_and_sweep_name_the_same_run_for_every_spelling(tmp_path):
    """`make -n student` prints the run directory it would write; a sweep plans the same one."""
    template = StudentConfig(cache=tmp_path / "c.h5", dataset=tmp_path / "dataset" / "fashion-mnist-n3000.npz",
                             out_dir=tmp_path, epochs=5, teacher_tag="-e1")
    for spelling in ("4", "4.0", "4.00"):
        dry = make("-n", "student", f"T={spelling}", "ALPHA=0.50", "STUDENT=mlp", "TEACHER_EPOCHS=1", "LIMIT=3000",
                   f"DATA_DIR={tmp_path}")
        assert dry.returncode == 0, dry.stderr
        made = re.search(r"--out-dir '?([^' ]+)", dry.stdout.split("softcache student", 1)[1]).group(1)
        swept = plan_sweep(SweepConfig(student=template, runs_dir=tmp_path / "runs", reports_dir=tmp_path,
                                       students=("mlp",), Ts=(float(spelling),), alphas=(0.5,), seeds=(0,)))
        assert [str(r.out_dir) for r in swept] == [made] == [f"{tmp_path}/runs/mlp-T4-a0.5-from-e1-s0-e5-on-fashion-mnist-n3000"]


def test_limit_is_part_of_the_dataset_name():
    assert names.data_name("fashion-mnist") == "fashion-mnist"
    assert names.data_name("fashion-mnist", 3000) == "fashion-mnist-n3000"
    assert names.data_name("/x/my-data.npz") == "my-data"
    p = make_plan.plan({"LIMIT": "3000", "TEACHER_EPOCHS": "1"}, environ={})
    assert p.cache == "data/cache/fashion-mnist-n3000-e1-T1-float32.h5"


def test_teacher_tags_and_cache_names():
    assert names.teacher_tag() == ""
    assert names.teacher_tag("cnn", 30, 2, 3) == "-cnn-e30-s2-x3"
    assert names.teacher_tag("models/t.pt2") == "-t_pt2" and names.teacher_tag("pkg.mod:make") == "-pkg_mod-make"
    assert names.cache_file_name("fm", "-e30", temperature=2.0, dtype="float16", topk=3) == "fm-e30-T2-float16-top3.h5"
    assert names.cache_file_name("fm", "", views=8, view_seed=1, mixup=1.0) == "fm-T1-float32-v8-vs1-mx1.h5"
    p = make_plan.plan({"TEACHERS": "3", "TEACHER_EPOCHS": "30", "TEACHER_SEED": "1"}, environ={})
    assert p.member_tags == ["-e30-s1", "-e30-s2", "-e30-s3"] and p.tag == "-e30-s1-x3"


def test_threads_are_shared_out():
    assert settings.threads_per_run(0, 1, cores=8) == 8 and settings.threads_per_run(0, 3, cores=8) == 2
    assert settings.threads_per_run(0, 16, cores=8) == 1 and settings.threads_per_run(3, 2, cores=8) == 3
    assert settings.threads_per_run(5, 2, cores=8) == 4 and settings.threads_per_run(64, 1, cores=2) == 2   # capped


@pytest.mark.parametrize("given,message", [
    ({"TEACHERS": "2", "TEACHER": "m.pt"}, "is one teacher, so use TEACHERS=1"),
    ({"TEACHERS": "2", "CACHE_TOPK": "3"}, "stores every logit"),
    ({"MIXUP": "1"}, "MIXUP needs cached views"),
    ({"AUGMENT": "1", "REPLAY": "2"}, "drop AUGMENT"),
    ({"TEACHERS": "0"}, "TEACHERS must be a whole number in [1, 1024], got 0"),
    ({"DEVICE": "tpu"}, "DEVICE must be one of auto, cpu, cuda, got tpu"),
    ({"LIMIT": "-5"}, "LIMIT must be a whole number in [0, 1000000000], got -5"),
    ({"SOURCE": "/nonexistent"}, "SOURCE=/nonexistent does not exist"),
    ({"TS": "1 x"}, "TS: T must be a number, got x"),
    ({"LABELS": "-3"}, "LABELS must be a whole number in [0, 1000000000], got -3"),
    ({"LABELS": "600 600"}, "LABELS lists '600' twice"),
    ({"TRANSFER": "/nonexistent.npz"}, "TRANSFER=/nonexistent.npz does not exist"),
    ({"TRANSFER": "tests/conftest.py", "TEACHER": "published"}, "TEACHER=published holds no logits for TRANSFER"),
])
def test_settings_that_cannot_work_are_refused(given, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        make_plan.plan(given, environ={})


def test_a_refused_value_stops_make_before_any_stamp(tmp_path):
    for bad in ("LIMIT=-5", "DEVICE=tpu", "SOURCE=/nonexistent"):
        proc = make("student", bad, f"DATA_DIR={tmp_path}")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_no_labels_needs_alpha_1_in_what_the_target_trains():
    with pytest.raises(UsageError, match="LABELS=0 leaves no hard labels"):
        make_plan.plan({"LABELS": "0", "ALPHA": "0.5"}, environ={}, goals=["student"])
    with pytest.raises(UsageError, match="a scratch run, ALPHA=0, has nothing to learn"):
        make_plan.plan({"LABELS": "0", "ALPHA": "1"}, environ={}, goals=["sweep"])    # ALPHAS: "0 1"
    make_plan.plan({"LABELS": "0", "ALPHAS": "1"}, environ={}, goals=["sweep"])
    make_plan.plan({"LABELS": "0", "ALPHA": "1"}, environ={}, goals=["student"])


def test_a_list_of_label_counts_is_for_experiment_labels_only():
    with pytest.raises(UsageError, match="only experiment-labels runs"):
        make_plan.plan({"LABELS": "600 1200"}, environ={}, goals=["student"])
    p = make_plan.plan({"LABELS": "600 1200 all"}, environ={}, goals=["experiment-labels"])
    assert p.label_grid == ["600", "1200", "all"] and p.labels is None
    assert make_plan.plan({}, environ={}).label_grid == settings.LABEL_GRID.split()
    assert "-l600-" in make_plan.plan({"LABELS": "600"}, environ={}).run("mlp", 4, 0.5)


def test_a_transfer_set_names_its_cache_and_reaches_the_pass_and_the_student(tmp_path):
    pool = tmp_path / "my-pool.npz"
    pool.write_bytes(b"")
    proc = make("-n", "student", f"TRANSFER={pool}", f"DATA_DIR={tmp_path}", "ALPHA=0.5")
    assert proc.returncode == 0, proc.stderr
    assert "-T1-float32-tr_my_pool.h5" in proc.stdout and f"--transfer {pool}" in proc.stdout
    assert "cnn-tiny-T4-a0.5-tr_my_pool-s0-e5" in proc.stdout


def test_make_help_lists_every_setting_with_its_default():
    text = make("help").stdout
    for s in settings.SETTINGS:
        assert re.search(rf"^  {s.name} +.+\[{re.escape(s.default or 'unset')}\]$", text, re.M), s.name
    for target, _ in settings.TARGETS:
        assert f"  {target} " in text


def test_every_variable_the_makefile_reads_comes_from_the_table():
    """The Makefile computes no names: each variable it expands is a setting, a name handed over
    by pipeline/names.py, a run rule's field, or one of its own few helpers."""
    used = set(re.findall(r"\$\(([A-Z_]+)\)", (ROOT / "Makefile").read_text()))
    fragment = make_plan.make_fragment(make_plan.plan({}, environ={}))
    handed = set(re.findall(r"^(?:override )?([A-Z_]+) :=", fragment, re.M))
    fields = {"STAMP", "MEMBER_SEED", "RUN_STUDENT", "RUN_T", "RUN_ALPHA", "RUN_LABELS", "RUN_SELF", "RUN_SEED"}
    own = {"MAKE", "MAKECMDGOALS", "PYTHON", "GIVEN", "NAMES_MK", "NAMES_RC", "SETTINGS_ERROR", "REPORT", "PASS_ARGS",
           "EXPERIMENT_ARGS", "SWEEP", "BENCHMARKS", "NEWLINE", "NAMES_IN", "NAMES_OK"}
    assert used - set(settings.DEFAULTS) - handed - fields - own == set()


def test_a_misspelled_variable_gets_a_warning_naming_the_setting():
    assert "TEMP is not a softcache setting" in make("-n", "help", "TEMP=4").stderr
    assert "did you mean T?" in make("-n", "help", "TEMP=4").stderr
    assert "did you mean EPOCHS?" in make("-n", "help", "EPOCS=4").stderr


def test_demo_uses_the_published_teacher_only_when_nothing_else_is_named(tmp_path):
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "fashion-mnist.h5").write_bytes(b"")
    assert make_plan.plan({}, environ={}, root=tmp_path).demo_settings() == {"TEACHER": "published", "T": "1",
                                                                        "ALPHA": "0.5"}
    for given in ({"LIMIT": "2000"}, {"TEACHER": "auto"}, {"TEACHER_EPOCHS": "30"}, {"TEACHERS": "3"}):
        assert make_plan.plan(given, environ={}, root=tmp_path).demo_settings() == {}, given
    assert make_plan.plan({}, environ={}, root=tmp_path / "elsewhere").demo_settings() == {}


# --- run identity: distinct settings never share a run directory ------------------------------------------

# Every setting that changes what a student run computes, with values to try. DEVICE and THREADS are left
# out on purpose: a changed DEVICE retrains the teacher in place (its stamp), and threads only reorder sums.
_IDENTITY_GRID = {
    "DATASET": ["fashion-mnist", "OTHER_NPZ", "FOLDER"], "LIMIT": ["0", "2000"],
    "IMAGE_SIZE": ["", "32", "32x16"], "CHANNELS": ["auto", "3"], "BAD_IMAGES": ["fail", "skip"],
    "TEST_FRACTION": ["0.1", "0.2"], "SPLIT_SEED": ["0", "1"],
    "TEACHER": ["auto", "cnn", "published", "TEACHER_FILE"], "TEACHERS": ["1", "3"], "TEACHER_EPOCHS": ["0", "30"],
    "TEACHER_SEED": ["0", "1"], "TEACHER_T": ["1", "2"], "CACHE_DTYPE": ["float32", "float16"],
    "CACHE_TOPK": ["0", "3"], "VIEWS": ["1", "8"], "VIEW_SEED": ["0", "1"], "MIXUP": ["0", "1"],
    "COMBINE": ["logits", "probs"], "TRANSFER": ["", "POOL"], "STUDENT": ["mlp", "cnn-tiny"], "T": ["1", "4"],
    "ALPHA": ["0", "0.5", "1"], "SEED": ["0", "1"], "EPOCHS": ["5", "10"], "REPLAY": ["0", "4"],
    "AUGMENT": ["0", "1"], "HOLDOUT": ["0", "500"], "LABELS": ["all", "600"],
}


def _effective(s: dict[str, str]) -> tuple:
    """What decides a run's result, with what cannot matter dropped: a scratch run uses no teacher and no
    cache; the published cache is one fixed file; view settings matter only with views."""
    kept = dict(s)
    if s["DATASET"] != "FOLDER":       # what becomes of an image folder's files
        for name in names.FOLDER_SETTINGS:
            kept.pop(name)
    if float(s["ALPHA"]) == 0:
        for name in ("T", "TEACHER", "TEACHERS", "TEACHER_EPOCHS", "TEACHER_SEED", "TEACHER_T", "CACHE_DTYPE",
                     "CACHE_TOPK", "VIEWS", "VIEW_SEED", "MIXUP", "COMBINE", "TRANSFER"):
            kept.pop(name)
    elif s["TEACHER"] == "published":
        for name in ("TEACHERS", "TEACHER_EPOCHS", "TEACHER_SEED", "TEACHER_T", "CACHE_DTYPE", "CACHE_TOPK", "VIEWS",
                     "VIEW_SEED", "MIXUP"):
            kept.pop(name)
    elif s["TEACHER"] == "TEACHER_FILE":
        kept.pop("TEACHER_EPOCHS"), kept.pop("TEACHER_SEED")
    if "VIEWS" in kept and kept["VIEWS"] == "1":
        kept.pop("VIEW_SEED")
    return tuple(sorted(kept.items()))


def test_distinct_settings_never_share_a_run_directory(tmp_path):
    """From random settings (the valid ones), change one setting at a time to each of its values: every pair that
    differs in what decides the result must land in two run directories (refused settings are skipped)."""
    import random

    files = {"OTHER_NPZ": tmp_path / "other.npz", "TEACHER_FILE": tmp_path / "teacher.pt2",
             "POOL": tmp_path / "pool.npz"}
    for f in files.values():
        f.write_bytes(b"")
    files["FOLDER"] = tmp_path / "folder"
    (files["FOLDER"] / "train" / "cats").mkdir(parents=True)
    concrete = lambda s: {k: str(files.get(v, v)) for k, v in s.items()}   # noqa: E731

    def run_dir(s: dict[str, str]) -> str | None:
        try:
            p = make_plan.plan(concrete(s), environ={}, goals=["student"])
        except UsageError:
            return None
        return p.run(p.settings["STUDENT"], p.settings["T"], p.settings["ALPHA"])

    rng = random.Random(0)
    seen: dict[str, tuple] = {}
    checked = 0
    for _ in range(400):
        base = {k: rng.choice(v) for k, v in _IDENTITY_GRID.items()}
        for name, values in _IDENTITY_GRID.items():
            for value in values:
                s = {**base, name: value}
                d = run_dir(s)
                if d is None:
                    continue
                checked += 1
                assert seen.setdefault(d, _effective(s)) == _effective(s), f"two settings share run {d}"
    assert checked > 2000 and len(seen) > 500


def test_a_cache_of_other_storage_names_its_runs_and_the_default_keeps_its_names():
    default = make_plan.plan({}, environ={})
    assert default.run("cnn-tiny", "4", "0.5") == "cnn-tiny-T4-a0.5-s0-e5"
    p = make_plan.plan({"TEACHER_T": "2", "CACHE_DTYPE": "float16", "TEACHER_EPOCHS": "30"}, environ={})
    run = p.run("cnn-tiny", "4", "0.5")
    assert run == "cnn-tiny-T4-a0.5-from-e30-tt2-f16-s0-e5" and names.parse_run_name(run).teacher == "-e30-tt2-f16"
    assert p.run("cnn-tiny", "4", "0") == "cnn-tiny-scratch-s0-e5"      # scratch never reads the cache
    assert make_plan.plan({"TEACHER": "published", "VIEWS": "8"}, environ={}).run("mlp", "1", "0.5") == \
        "mlp-T1-a0.5-from-published-s0-e5"


def test_the_demo_adds_a_few_label_pair_where_the_cache_pays_most(tmp_path):
    """DEMO_LABELS=N: cnn-tiny scratch and distilled on N hard labels beside the full-label runs, each run with
    its own --labels; '' leaves the pair out. An empty DATA_DIR, so runs a demo already made still show."""
    demo = make("-n", "demo-runs", "TEACHER=published", f"DATA_DIR={tmp_path}").stdout
    assert "cnn-tiny-scratch-l1200-s0-e5" in demo and "cnn-tiny-T4-a0.5-from-published-l1200-s0-e5" in demo
    assert demo.count("--labels '1200'") == 2
    assert "-l1200" not in make("-n", "demo-runs", "TEACHER=published", "DEMO_LABELS=", f"DATA_DIR={tmp_path}").stdout


@pytest.mark.parametrize("student, tag", [
    ("cnn-tiny", "cnn-tiny"),
    ("timm:mobilenetv3_small_050", "timm_mobilenetv3_small_050"),
    ("my_pkg.models:small", "my_pkg.models_small"),
    ("hf:models/my llama;rm -rf ~/config.json", None),
    ("hf:../$(HOME)/config.json", None),
])
def test_a_students_spelling_becomes_a_readable_name_the_shell_cannot_misread(student, tag):
    from pipeline.names import parse_run_name, student_tag

    name = names.run_name(student, 4, 0.5, 0, 5)
    got = student_tag(student)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", got) and student_tag(got) == got
    assert tag is None or got == tag
    if student.startswith("hf:"):     # the folder's name stays readable; the digest keeps two spellings apart
        assert got.startswith("hf_") and got != student_tag(student + "x")
    assert parse_run_name(name).student == got and name.startswith(got + "-T4-a0.5-")
