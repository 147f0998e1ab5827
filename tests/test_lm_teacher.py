"""A causal LM teacher trained on a prepared text file: causal (position j sees tokens up to j), it
learns (validation bits per byte fall well below the 8 of a uniform guess), its record names the text and
tokenizer it came from, and a run interrupted mid-way resumes to the uninterrupted weights."""

import json

import pytest
import torch

from pipeline.config import LMTeacherConfig
from pipeline.data.text import load_corpus
from pipeline.data.tokenizers import BYTES
from pipeline.data.windows import prepare_text
from pipeline.models import create_lm, list_lms
from pipeline.names import TEACHER_CHECKPOINT, TEACHER_RECORD
from pipeline.teacher.lm_fit import train_lm_teacher
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.lm_loop import LMTrainer
from pipeline.training.resume import resume_dir
from tests.test_text_data import write_docs


@pytest.fixture
def text_file(tmp_path):
    corpus = load_corpus(str(write_docs(tmp_path / "docs", n=80)))
    prepare_text(corpus, BYTES, tmp_path / "text.h5")
    return tmp_path / "text.h5"


@pytest.mark.parametrize("name", list_lms())
def test_every_registered_lm_is_causal(name):
    torch.manual_seed(0)
    model = create_lm(name, vocab_size=300, context=24).eval()
    ids = torch.randint(0, 300, (2, 24))
    changed = ids.clone()
    changed[:, 12] = (changed[:, 12] + 1) % 300
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert a.shape == (2, 24, 300)
    assert torch.equal(a[:, :12], b[:, :12]) and not torch.allclose(a[:, 12:], b[:, 12:])


def test_a_teacher_learns_and_records_where_it_came_from(tmp_path, text_file):
    cfg = LMTeacherConfig(text=text_file, out_dir=tmp_path / "teacher", arch="lm-tiny", context=32, steps=60,
                          batch_size=16, lr=3e-3, eval_every=20, device="cpu", threads=1)
    record = train_lm_teacher(cfg, progress=False)
    assert record["val_bits_per_byte"] < 5 < 8 and len(record["history"]) == 3
    assert record["history"][-1]["train_loss"] < record["history"][0]["train_loss"]
    written = json.loads((cfg.out_dir / TEACHER_RECORD).read_text())
    assert written["text"]["tokenizer"] == "bytes" and written["fingerprint"] == record["fingerprint"]
    model, ckpt = load_checkpoint(cfg.out_dir / TEACHER_CHECKPOINT, "lm", "teacher")
    assert ckpt["arch"] == "lm-tiny" and model.context == 32 and not resume_dir(cfg.out_dir).exists()


def test_an_interrupted_teacher_resumes_to_the_uninterrupted_weights(tmp_path, text_file, monkeypatch):
    kw = dict(text=text_file, arch="lm-tiny", context=32, steps=60, batch_size=8, eval_every=20, device="cpu",
              threads=1)
    train_lm_teacher(LMTeacherConfig(out_dir=tmp_path / "whole", **kw), progress=False)
    real, calls = LMTrainer.train_steps, []

    def dies(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    cfg = LMTeacherConfig(out_dir=tmp_path / "killed", **kw)
    monkeypatch.setattr(LMTrainer, "train_steps", dies)
    with pytest.raises(KeyboardInterrupt):
        train_lm_teacher(cfg, progress=False)
    monkeypatch.setattr(LMTrainer, "train_steps", real)
    assert (resume_dir(cfg.out_dir) / "state.pt").is_file() and not cfg.out_dir.exists()
    assert train_lm_teacher(cfg, progress=False)["resumed_from_step"] == 40
    a = torch.load(tmp_path / "whole" / TEACHER_CHECKPOINT, weights_only=True)["state_dict"]
    b = torch.load(cfg.out_dir / TEACHER_CHECKPOINT, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_limited_score_reads_windows_spread_over_the_split(text_file):  # noqa: F811
    from pipeline.data.windows import TokenWindows
    from pipeline.training.lm_loop import bits_per_byte

    windows, asked = TokenWindows(text_file, "train", 16), []
    real = windows.batch
    windows.batch = lambda idx: asked.extend(idx) or real(idx)
    bits_per_byte(create_lm("lm-tiny", vocab_size=256, context=16), windows, [1] * 256, batch_size=4, limit=5)
    assert len(asked) == 5 and asked[0] == 0 and asked[-1] == len(windows) - 1 and asked == sorted(set(asked))
