"""The text stages through the command line, end to end on a small real folder: data (bytes), lm-teacher,
token-logits, inspect and verify (which re-scores windows with the teacher and catches an edited cache),
each bad input one line with exit status 2."""

import h5py
import pytest

from pipeline.data.text import load_corpus, stdlib_root
from tests.test_hostile_inputs import assert_one_line, run_cli


@pytest.fixture
def real_text(tmp_path):
    """Thirty files of this Python's standard library, with names that keep them in all three splits."""
    corpus = load_corpus("stdlib")
    chosen = [*corpus.documents["train"][:24], *corpus.documents["val"][:3], *corpus.documents["test"][:3]]
    for name in chosen:
        (tmp_path / "corpus" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "corpus" / name).write_bytes((stdlib_root() / name).read_bytes()[:4000])
    return tmp_path / "corpus"


def test_data_teacher_pass_inspect_and_verify(tmp_path, real_text, capsys):
    text, teacher, cache = tmp_path / "text.h5", tmp_path / "teacher", tmp_path / "tokens.h5"
    code, out, _ = run_cli(["data", "--dataset", real_text, "--tokenizer", "bytes", "--out", text], capsys)
    assert code == 0 and "tokenizer bytes (V = 256)" in out
    code, out, _ = run_cli(["lm-teacher", "--text", text, "--out-dir", teacher, "--arch", "lm-tiny", "--context",
                            "32", "--steps", "20", "--eval-every", "10", "--device", "cpu", "--threads", "1"], capsys)
    assert code == 0 and "bits per byte on val" in out
    code, out, _ = run_cli(["token-logits", "--teacher", teacher / "teacher.pt", "--text", text, "--out", cache,
                            "--topk", "8", "--device", "cpu", "--threads", "1"], capsys)
    assert code == 0 and "val" in out and cache.is_file()
    code, out, _ = run_cli(["inspect", cache], capsys)
    assert code == 0 and "mass @T=2" in out and "top-8" in out
    code, out, _ = run_cli(["verify", cache, "--dataset", text, "--teacher", teacher / "teacher.pt"], capsys)
    assert code == 0 and out.count("re-scored") == 2 and "100.00% of top-k ids the same" in out
    with h5py.File(cache, "r+") as f:                       # windows reordered by h5py (checksums recomputed)
        f["train/topk_logits"][:] = f["train/topk_logits"][:][::-1]
    code, _, err = run_cli(["verify", cache], capsys)
    assert_one_line(code, err, "differ from the digest")


@pytest.mark.parametrize("args,match", [
    (["data", "--dataset", "stdlib", "--tokenizer", "wordpiece"], "TOKENIZER must be bytes, bpe-N"),
    (["token-logits", "--teacher", "nope.pt", "--text", "nope.h5"], "missing"),
])
def test_bad_text_inputs_are_one_line(tmp_path, capsys, args, match):
    code, _, err = run_cli([*args, "--out", tmp_path / "x.h5"], capsys)
    assert_one_line(code, err, match)
    assert not (tmp_path / "x.h5").exists()
