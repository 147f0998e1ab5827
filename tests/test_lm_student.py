"""LM students from the per-token cache: the run records what a user compares (bits per byte, agreement with
the teacher, tokens per second, the cache's fingerprint), a killed run resumes to the same weights, scratch
never reads the cache's values, and what cannot be trained is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.cache.lm_reader import TokenCache
from pipeline.config import LMStudentConfig
from pipeline.errors import UsageError
from pipeline.student import lm_distill
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.lm_loop import LMTrainer
from tests.test_lm_teacher import text_file  # noqa: F401  (the fixture)
from tests.test_token_dataset import token_cache  # noqa: F401  (the fixture)
from tests.test_token_pass import lm_teacher  # noqa: F401  (the fixture)


def _config(tmp_path, cache, text, name="run", **kw) -> LMStudentConfig:
    return LMStudentConfig(cache=cache, text=text, out_dir=tmp_path / name, student="lm-tiny",
                           **{"T": 2.0, "alpha": 0.5, "steps": 12, "batch_size": 4, "eval_every": 4,
                              "eval_windows": 8, "threads": 1, **kw})


def test_a_distilled_run_records_what_a_user_compares(tmp_path, token_cache, text_file):  # noqa: F811
    m = lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file), progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test_bits_per_byte"] == m["test_bits_per_byte"] > 0 and 0 <= m["teacher_agreement"] <= 1
    assert [h["step"] for h in m["history"]] == [4, 8, 12] and m["tokens_per_second"] > 0
    assert m["cache_fingerprint"] and m["params"] > 50_000 and m["kind"] == "lm"
    model, ckpt = load_checkpoint(tmp_path / "run" / "model.pt", "lm", "student")
    assert ckpt["arch"] == "lm-tiny" and model.context == 16


@pytest.mark.parametrize("recipe", [{}, {"alpha": 0.0, "self_alpha_T": 0.8}], ids=["distilled", "pskd"])
def test_a_killed_run_resumes_to_the_same_weights(tmp_path, token_cache, text_file, monkeypatch, recipe):  # noqa: F811
    """PS-KD too: its teacher, the state at the start of the epoch, is rebuilt from the resume file."""
    lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, "whole", **recipe), progress=False)
    real, calls = LMTrainer.train_steps, []

    def dies(self, *args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, *args, **kw)

    monkeypatch.setattr(LMTrainer, "train_steps", dies)
    with pytest.raises(KeyboardInterrupt):
        lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, "killed", **recipe), progress=False)
    monkeypatch.setattr(LMTrainer, "train_steps", real)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    m = lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, "killed", **recipe), progress=False)
    assert m["resumed_from_step"] == 8
    a, _ = load_checkpoint(tmp_path / "whole" / "model.pt", "lm", "student")
    b, _ = load_checkpoint(tmp_path / "killed" / "model.pt", "lm", "student")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_scratch_never_reads_the_targets_and_differs_from_distilled(tmp_path, token_cache, text_file, monkeypatch):  # noqa: F811
    distilled = lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, "kd"), progress=False)

    def no_reading(*args, **kw):
        raise AssertionError("scratch read the cache's targets")

    monkeypatch.setattr(lm_distill.TokenCache, "targets", no_reading)
    monkeypatch.setattr(lm_distill, "teacher_agreement", lambda *a, **k: 0.0)
    scratch = lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, "scratch", alpha=0.0),
                                          progress=False)
    assert scratch["test_bits_per_byte"] != distilled["test_bits_per_byte"]


def test_pskd_learns_from_its_own_earlier_state_not_the_cache(tmp_path, token_cache, text_file, monkeypatch):  # noqa: F811
    scratch = lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, "scratch", alpha=0.0),
                                          progress=False)

    def no_reading(*args, **kw):
        raise AssertionError("PS-KD read the cache's targets")

    monkeypatch.setattr(lm_distill.TokenCache, "targets", no_reading)
    monkeypatch.setattr(lm_distill, "teacher_agreement", lambda *a, **k: 0.0)
    pskd = lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, "pskd", alpha=0.0, self_alpha_T=0.8),
                                       progress=False)
    assert pskd["method"] == "ps-kd" and pskd["alpha_T"] == 0.8
    # the first epoch (4 steps) trains on the next tokens alone, as scratch does; later ones differ
    assert pskd["history"][0]["train_loss"] == scratch["history"][0]["train_loss"]
    assert pskd["test_bits_per_byte"] != scratch["test_bits_per_byte"]


def test_the_token_pskd_loss_is_cross_entropy_against_the_mixed_target():
    from pipeline.student.pskd import token_pskd_loss
    torch.manual_seed(0)
    z, prev = torch.randn(2, 3, 5, requires_grad=True), torch.randn(2, 3, 5)
    y = torch.randint(5, (2, 3))
    target = 0.7 * torch.nn.functional.one_hot(y, 5).float() + 0.3 * prev.softmax(-1)
    dense = torch.nn.functional.cross_entropy(z.reshape(-1, 5), target.reshape(-1, 5))
    assert torch.allclose(token_pskd_loss(z, y, prev, 0.3), dense, atol=1e-6)


def test_pskd_with_the_cache_weight_is_refused(tmp_path, token_cache, text_file):  # noqa: F811
    with pytest.raises(UsageError, match="give ALPHA=0 with METHOD=pskd"):
        _config(tmp_path, token_cache, text_file, alpha=0.5, self_alpha_T=0.8)


@pytest.mark.parametrize("change, match", [
    ({"T": 4.0}, r"T=4 is not in the cache's temperature grid \(1, 2\)"),
])
def test_what_cannot_be_trained_is_one_line(tmp_path, token_cache, text_file, change, match):  # noqa: F811
    with pytest.raises(UsageError, match=match):
        lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, **change), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_cache_of_other_text_is_refused(tmp_path, token_cache, text_file):  # noqa: F811
    from pipeline.data.text import load_corpus
    from pipeline.data.tokenizers import BYTES
    from pipeline.data.windows import prepare_text
    from tests.test_text_data import write_docs
    other = tmp_path / "other.h5"
    prepare_text(load_corpus(str(write_docs(tmp_path / "other-docs", n=80, seed=7))), BYTES, other)
    with pytest.raises(UsageError, match="was made for another text_fingerprint"):
        lm_distill.train_lm_student(_config(tmp_path, token_cache, other), progress=False)


def test_targets_read_from_memory_are_the_files(token_cache):  # noqa: F811
    on_disk, in_memory = TokenCache(token_cache), TokenCache(token_cache, in_memory=True)
    rows = [5, 0, 5, 2]
    for a, b in zip(on_disk.targets("train", rows, 2.0), in_memory.targets("train", rows, 2.0)):
        assert torch.equal(a, b)


def test_a_smaller_k_read_from_a_larger_cache_is_what_a_cache_at_that_k_holds(tmp_path, lm_teacher, text_file):  # noqa: F811
    from pipeline.config import TokenLogitsConfig
    from pipeline.teacher.lm_pass import write_token_logits
    made = {}
    for k in (0, 4, 8):
        cfg = TokenLogitsConfig(teacher=lm_teacher, text=text_file, out=tmp_path / f"k{k}.h5", topk=k, dtype="float32",
                                temperatures=(1.0, 2.0), device="cpu", threads=1)
        write_token_logits(cfg, progress=False)
        made[k] = TokenCache(cfg.out)
    rows = [3, 1, 4]
    want_ids, want_p, want_tail = made[4].targets("val", rows, 2.0)
    for source in (made[8], made[0]):          # a larger top-k, and the dense cache
        ids, log_p, tail = source.targets("val", rows, 2.0, topk=4)
        assert torch.equal(ids, want_ids)
        assert torch.allclose(log_p, want_p, atol=1e-5) and torch.allclose(tail, want_tail, atol=1e-4)


def test_an_image_student_on_a_text_cache_and_the_reverse_are_one_line(tmp_path, token_cache, text_file, prepared,  # noqa: F811
                                                                       capsys):
    from stages.cli import main
    from tests.test_cache import make_cache
    image_cache = tmp_path / "image.h5"
    make_cache(image_cache)
    for args, says in ((["student", "--cache", token_cache, "--dataset", text_file, "--out-dir", tmp_path / "a"],
                        "is prepared text, which image stages do not read"),
                       (["student", "--cache", token_cache, "--dataset", prepared, "--out-dir", tmp_path / "c"],
                        "is a per-token cache (text), which image students do not read"),
                       (["lm-student", "--cache", image_cache, "--text", text_file, "--out-dir", tmp_path / "b"],
                        "is no per-token cache")):
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        err = capsys.readouterr().err.strip()
        assert done.value.code == 2 and says in err and len(err.splitlines()) == 1, err
    assert not any((tmp_path / name).exists() for name in "abc")


def test_log_tensorboard_writes_each_evaluation(tmp_path, token_cache, text_file):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    lm_distill.train_lm_student(_config(tmp_path, token_cache, text_file, tensorboard_dir=tmp_path / "tb"),
                                progress=False)
    events = EventAccumulator(str(tmp_path / "tb" / "run"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_bits_per_byte")] == [4, 8, 12]


def test_a_window_longer_than_the_students_context_is_one_line(tmp_path, token_cache, text_file):  # noqa: F811
    """A user's own loop (or a cache of another CONTEXT) handing the student more tokens than its
    positions: refused in one line naming the context, not an index error deep in an embedding."""
    from pipeline.data.windows import TokenWindows
    from pipeline.models import create_lm
    student = create_lm("lm-tiny", vocab_size=256, context=8)
    longer = TokenWindows(text_file, "train", 16).batch([0])[:, :-1]
    with pytest.raises(UsageError, match="a window of 16 tokens is longer than the model's context of 8; use CONTEXT=8"):
        student(longer)
