"""The per-token teacher pass: its cache holds exactly the teacher's targets for every window, a pass
interrupted mid-way resumes to identical bytes, and what cannot be cached is refused in one line."""

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from pipeline.cache.format import read_arrays
from pipeline.cache.lm_format import target_log_probs, token_targets
from pipeline.cache.lm_reader import TokenCache
from pipeline.config import LMTeacherConfig, TokenLogitsConfig
from pipeline.data.windows import TokenWindows, text_tokenizer
from pipeline.errors import UsageError
from pipeline.names import TEACHER_CHECKPOINT
from pipeline.teacher import lm_pass
from pipeline.teacher.lm_fit import train_lm_teacher
from pipeline.teacher.pass_parts import Parts
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.lm_loop import bits_per_byte
from tests.test_lm_teacher import text_file  # noqa: F401  (the fixture)

GRID = (1.0, 2.0)


@pytest.fixture
def lm_teacher(tmp_path, text_file):  # noqa: F811
    cfg = LMTeacherConfig(text=text_file, out_dir=tmp_path / "teacher", arch="lm-tiny", context=16, steps=20,
                          batch_size=8, eval_every=20, device="cpu", threads=1)
    train_lm_teacher(cfg, progress=False)
    return cfg.out_dir / TEACHER_CHECKPOINT


def _config(tmp_path, lm_teacher, text_file, name="c.h5", **kw):  # noqa: F811
    return TokenLogitsConfig(teacher=lm_teacher, text=text_file, out=tmp_path / name, topk=8, dtype="float32",
                             temperatures=GRID, batch_size=4, chunk_windows=5, device="cpu", threads=1, **kw)


def test_the_cache_holds_the_teachers_targets_for_every_window(tmp_path, lm_teacher, text_file):  # noqa: F811
    summary = lm_pass.write_token_logits(_config(tmp_path, lm_teacher, text_file), progress=False)
    cache = TokenCache(summary["path"])
    model, ckpt = load_checkpoint(lm_teacher, "lm", "teacher")
    assert cache.attrs["teacher_fingerprint"] == ckpt["fingerprint"] and cache.attrs["context"] == 16
    windows = TokenWindows(text_file, "val", 16)
    assert cache.windows("val") == len(windows) > 0 and summary["resumed_windows"] == 0
    with torch.no_grad():
        logits = model(windows.batch(range(len(windows)))[:, :-1])
    for T in GRID:
        want = target_log_probs(token_targets(logits, 8, GRID), T, GRID)
        got = cache.targets("val", list(range(len(windows))), T)
        assert all(torch.allclose(a.float(), b.float(), atol=1e-5) for a, b in zip(got, want))
    lengths = text_tokenizer(text_file).byte_lengths()       # what the teacher scores on each split of this text
    no_t1 = TokenCache(lm_pass.write_token_logits(dataclasses.replace(   # a grid without T = 1: from the logits
        _config(tmp_path, lm_teacher, text_file, "t2.h5"), temperatures=(2.0,)), progress=False)["path"])
    for split in ("train", "val", "test"):
        scored = bits_per_byte(model, TokenWindows(text_file, split, 16), lengths)["bits_per_byte"]
        assert cache.attrs[f"teacher_{split}_bits_per_byte"] == pytest.approx(scored, rel=1e-5)
        assert no_t1.attrs[f"teacher_{split}_bits_per_byte"] == pytest.approx(scored, rel=1e-5)


def test_an_interrupted_pass_resumes_to_identical_bytes(tmp_path, lm_teacher, text_file, monkeypatch):  # noqa: F811
    whole = lm_pass.write_token_logits(_config(tmp_path, lm_teacher, text_file, "whole.h5"), progress=False)
    real, saved = Parts.save, []

    def dies(self, *args):
        if len(saved) == 3:
            raise KeyboardInterrupt
        saved.append(1)
        return real(self, *args)

    cfg = _config(tmp_path, lm_teacher, text_file, "killed.h5")
    monkeypatch.setattr(Parts, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        lm_pass.write_token_logits(cfg, progress=False)
    monkeypatch.setattr(Parts, "save", real)
    assert not cfg.out.exists()
    resumed = lm_pass.write_token_logits(cfg, progress=False)
    assert resumed["resumed_windows"] == 15
    a, b = read_arrays(whole["path"]), read_arrays(cfg.out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with h5py.File(whole["path"]) as fa, h5py.File(cfg.out) as fb:     # the same values' digests
        da, db = json.loads(fa.attrs["digests"]), json.loads(fb.attrs["digests"])
    da.pop("attrs"), db.pop("attrs")          # the attributes differ in the creation time and pass seconds
    assert da == db


def test_a_context_longer_than_the_teachers_is_refused(tmp_path, lm_teacher, text_file):  # noqa: F811
    with pytest.raises(UsageError, match="CONTEXT=64 is longer than the teacher's context of 16"):
        lm_pass.write_token_logits(_config(tmp_path, lm_teacher, text_file, context=64), progress=False)
    assert not (tmp_path / "c.h5").exists()


def test_a_teacher_returning_nan_is_refused_and_nothing_is_marked_done(tmp_path, lm_teacher, text_file):  # noqa: F811
    model, ckpt = load_checkpoint(lm_teacher, "lm", "teacher")
    with torch.no_grad():
        model.out.weight[5, 0] = float("nan")                          # one token's logit, at every position
    broken = tmp_path / "broken.pt"
    save_checkpoint(broken, kind="lm", arch=ckpt["arch"], model=model, model_kwargs=ckpt["model_kwargs"],
                    config=ckpt["config"], metrics=ckpt["metrics"])
    with pytest.raises(UsageError, match="the teacher returned non-finite values for windows 0..3 of train"):
        lm_pass.write_token_logits(_config(tmp_path, broken, text_file), progress=False)
    assert not (tmp_path / "c.h5").exists() and not list(tmp_path.glob(".c.h5.parts/*.npz"))


def test_a_published_teacher_is_float16_scored_as_stored_and_replaced_only_by_name(tmp_path, lm_teacher, text_file):  # noqa: F811
    """The committed teacher: half the bytes, its fingerprint that of the weights every reader rebuilds, its
    record's bits per byte those of the float16 weights; an existing one is kept unless named."""
    from pipeline.config import PublishLMTeacherConfig
    from pipeline.teacher.lm_publish import publish_lm_teacher
    from pipeline.training.checkpoint import read_checkpoint_file
    out = tmp_path / "published" / "tiny-lm-teacher.pt"
    cfg = PublishLMTeacherConfig(teacher=lm_teacher, text=text_file, out=out, command="pytest", device="CPU", threads=1)
    record = publish_lm_teacher(cfg)
    stored = read_checkpoint_file(out)["state_dict"]
    assert all(t.dtype == torch.float16 for t in stored.values() if t.is_floating_point())
    assert out.stat().st_size < 0.75 * lm_teacher.stat().st_size
    model, ckpt = load_checkpoint(out, "lm", "teacher")        # the fingerprint check passes on the rebuilt model
    assert ckpt["fingerprint"] == record["fingerprint"] != load_checkpoint(lm_teacher, "lm", "teacher")[1]["fingerprint"]
    test = bits_per_byte(model, TokenWindows(text_file, "test", 16), text_tokenizer(text_file).byte_lengths())
    assert record["test_bits_per_byte"] == pytest.approx(test["bits_per_byte"], rel=1e-6)
    assert json.loads(out.with_suffix(".json").read_text())["fingerprint"] == record["fingerprint"]
    before = out.read_bytes()
    with pytest.raises(UsageError, match="replaced only when asked by name: make publish REPUBLISH=tiny-lm-teacher"):
        publish_lm_teacher(cfg)
    assert out.read_bytes() == before
    assert publish_lm_teacher(dataclasses.replace(cfg, replace="tiny-lm-teacher"))["fingerprint"] == record["fingerprint"]
