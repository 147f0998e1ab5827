"""Every mistake a user can make gets one line on stderr, exit status 2, and leaves
finished artifacts as they were. Runs the real console entry point in-process."""

import h5py
import pytest

from pipeline.data.prepare import save_prepared
from stages.cli import main
from tests.conftest import make_dataset


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def student_args(tmp_path, prepared, cache, *extra):
    return ["student", "--cache", cache, "--dataset", prepared, "--out-dir", tmp_path / "runs" / "r",
            "--epochs", "1", "--batch-size", "32", *extra]


def assert_one_line_error(code, err, match):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]


@pytest.mark.parametrize("extra,match", [
    (["--T", "0"], "T must be a number in [0.01, 100]"),
    (["--T", "-2"], "T must be a number in [0.01, 100]"),
    (["--T", "abc"], "not a valid float"),
    (["--alpha", "1.5"], "ALPHA must be a number in [0, 1]"),
    (["--alpha", "-0.1"], "ALPHA must be a number in [0, 1]"),
    (["--student", "resnet-9000"], "unknown student 'resnet-9000'"),
])
def test_bad_student_options(tmp_path, prepared, cache_file, capsys, extra, match):
    code, _, err = run_cli(student_args(tmp_path, prepared, cache_file, *extra), capsys)
    assert_one_line_error(code, err, match)
    assert not (tmp_path / "runs").exists()


def test_good_student_run_then_bad_rerun_keeps_the_finished_run(tmp_path, prepared, cache_file, capsys):
    code, out, _ = run_cli(student_args(tmp_path, prepared, cache_file), capsys)
    assert code == 0 and "test accuracy" in out
    before = (tmp_path / "runs" / "r" / "metrics.json").read_bytes()
    with h5py.File(cache_file, "r+") as f:
        f.attrs["complete"] = False
    code, _, err = run_cli(student_args(tmp_path, prepared, cache_file), capsys)
    assert_one_line_error(code, err, "run 'softcache teacher-logits'")
    assert (tmp_path / "runs" / "r" / "metrics.json").read_bytes() == before


def test_cache_problems(tmp_path, prepared, cache_file, capsys):
    code, _, err = run_cli(student_args(tmp_path, prepared, tmp_path / "nope.h5"), capsys)
    assert_one_line_error(code, err, "is missing; run 'softcache teacher-logits'")
    other = tmp_path / "other.npz"
    save_prepared(make_dataset(seed=5), other)
    code, _, err = run_cli(student_args(tmp_path, other, cache_file), capsys)
    assert_one_line_error(code, err, "different dataset")
    fewer = tmp_path / "fewer.npz"
    d = make_dataset()
    save_prepared(type(d)(d.name, d.x_train[:50], d.y_train[:50], d.x_test, d.y_test, d.class_names), fewer)
    code, _, err = run_cli(student_args(tmp_path, fewer, cache_file), capsys)
    assert_one_line_error(code, err, "different dataset")


def test_wrong_class_count_and_label_range(tmp_path, cache_file, capsys):
    with h5py.File(cache_file, "r+") as f:
        f["train/labels"][0] = 3
    code, _, err = run_cli(["verify", cache_file], capsys)
    assert_one_line_error(code, err, "labels lie outside [0, 3)")
    d = make_dataset()
    five = type(d)(d.name, d.x_train, d.y_train, d.x_test, d.y_test, d.class_names + ("a", "b"))
    save_prepared(five, tmp_path / "five.npz")
    code, _, err = run_cli(["verify", cache_file, "--dataset", tmp_path / "five.npz"], capsys)
    assert_one_line_error(code, err, "cache")


def test_class_count_mismatch_with_the_dataset(tmp_path, prepared, cache_file, capsys):
    d = make_dataset()
    five = type(d)(d.name, d.x_train, d.y_train, d.x_test, d.y_test, d.class_names + ("a", "b"))
    save_prepared(five, tmp_path / "five.npz")
    with h5py.File(cache_file, "r+") as f:
        f.attrs["dataset_fingerprint"] = five.fingerprint
    code, _, err = run_cli(student_args(tmp_path, tmp_path / "five.npz", cache_file), capsys)
    assert_one_line_error(code, err, "different number of classes")


def test_verify_and_inspect_a_good_cache(cache_file, prepared, capsys):
    code, out, _ = run_cli(["verify", cache_file, "--dataset", prepared], capsys)
    assert code == 0 and "OK" in out
    code, out, _ = run_cli(["inspect", cache_file, "--T", "2"], capsys)
    assert code == 0 and "entropy @T=2" in out and "96 train, 48 test" in out


def test_not_a_checkpoint(tmp_path, prepared, capsys):
    (tmp_path / "teacher.pt").write_bytes(b"nope")
    code, _, err = run_cli(["teacher-logits", "--teacher", tmp_path / "teacher.pt", "--dataset", prepared,
                            "--out", tmp_path / "c.h5", "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "not a softcache checkpoint")
    assert not (tmp_path / "c.h5").exists()


def test_data_stage_errors(tmp_path, capsys):
    code, _, err = run_cli(["data", "--dataset", "imagenet", "--out", tmp_path / "d.npz"], capsys)
    assert_one_line_error(code, err, "unknown dataset 'imagenet'")
    code, _, err = run_cli(["data", "--raw-dir", tmp_path / "raw", "--system-dir", tmp_path / "none",
                            "--no-download", "--out", tmp_path / "d.npz"], capsys)
    assert_one_line_error(code, err, "apt-get install dataset-fashion-mnist")
    assert not (tmp_path / "d.npz").exists()


def test_teacher_rejects_unknown_arch_and_missing_gpu(tmp_path, prepared, capsys):
    code, _, err = run_cli(["teacher", "--dataset", prepared, "--out-dir", tmp_path / "t", "--arch", "vit",
                            "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "unknown teacher 'vit'")
    import torch
    if not torch.cuda.is_available():
        code, _, err = run_cli(["teacher", "--dataset", prepared, "--out-dir", tmp_path / "t", "--device", "cuda"],
                               capsys)
        assert_one_line_error(code, err, "no CUDA GPU is visible")
    assert not (tmp_path / "t").exists()


def test_help_everywhere(capsys):
    for cmd in ([], ["data"], ["teacher"], ["teacher-logits"], ["student"], ["report"], ["inspect"], ["verify"]):
        code, out, _ = run_cli([*cmd, "--help"], capsys)
        assert code == 0 and "Usage:" in out


def test_each_layer_names_the_fix_in_its_own_terms():
    from pipeline.errors import UsageError, phrase_fix

    assert phrase_fix("teacher-logits", {"VIEWS": 8}, "make") == "run 'make teacher-logits VIEWS=8'"
    assert phrase_fix("teacher-logits", {"VIEWS": 8}, "cli") == "run 'softcache teacher-logits --views 8'"
    assert phrase_fix("teacher-logits", {"VIEWS": 8}, "python") == \
        "call pipeline.teacher.logits_pass.write_teacher_logits(LogitsConfig(..., views=8))"
    assert str(UsageError("cache x is missing", fix="teacher-logits")).startswith("cache x is missing; call ")
