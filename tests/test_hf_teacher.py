"""A user's Hugging Face causal LM as the teacher of the per-token pass: real ``transformers`` code on a
tiny GPT-2 with random weights saved to a temporary folder (no network), its own tokenizer.json, and the
folders softcache must refuse: a remote name, pickled weights only, code shipped with the model."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel  # the hf extra; make venv installs it

from pipeline.cache.lm_format import target_log_probs, token_targets
from pipeline.cache.lm_reader import TokenCache
from pipeline.config import TokenLogitsConfig
from pipeline.data.text import load_corpus
from pipeline.data.tokenizers import BYTES, load_tokenizer, train_bpe
from pipeline.data.windows import TokenWindows, prepare_text
from pipeline.errors import UsageError
from pipeline.teacher.hf_source import load_hf_teacher
from pipeline.teacher.lm_pass import write_token_logits
from tests.test_text_data import write_docs


@pytest.fixture
def hf_folder(tmp_path):
    corpus = load_corpus(str(write_docs(tmp_path / "docs", n=80)))
    bpe = train_bpe(corpus, 300)
    folder = tmp_path / "tiny-gpt2"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=320, n_positions=32, n_embd=32, n_layer=1, n_head=2))
    model.save_pretrained(folder, safe_serialization=True)       # output padded wider than the tokenizer: fine
    (folder / "tokenizer.json").write_text(bpe.definition)
    prepare_text(corpus, load_tokenizer(str(folder)), tmp_path / "text.h5")
    return folder


def test_a_local_hf_model_teaches_with_its_own_tokenizer(tmp_path, hf_folder):
    cfg = TokenLogitsConfig(teacher=hf_folder, text=tmp_path / "text.h5", out=tmp_path / "c.h5", topk=8,
                            temperatures=(1.0, 2.0), dtype="float32", device="cpu", threads=1)
    write_token_logits(cfg, progress=False)
    cache = TokenCache(cfg.out)
    model, record = load_hf_teacher(hf_folder)
    assert cache.attrs["vocab_size"] == 320 and cache.attrs["teacher_fingerprint"] == record["fingerprint"]
    windows = TokenWindows(tmp_path / "text.h5", "val", 32)
    with torch.no_grad():
        want = target_log_probs(token_targets(model(windows.batch([0])[:, :-1]), 8, (1.0, 2.0)), 2.0, (1.0, 2.0))
    got = cache.targets("val", [0], 2.0)
    assert torch.equal(got[0], want[0]) and torch.allclose(got[1], want[1], atol=1e-5)


def test_folders_softcache_must_not_load_are_refused_in_one_line(tmp_path, hf_folder):
    with pytest.raises(UsageError, match="is not a local folder: softcache never downloads"):
        load_hf_teacher("gpt2")
    for weights in hf_folder.glob("*.safetensors"):
        weights.rename(weights.with_name("pytorch_model.bin"))
    with pytest.raises(UsageError, match=r"only pickled ones \(pytorch_model.bin\), which run code when loaded"):
        load_hf_teacher(hf_folder)
    config = json.loads((hf_folder / "config.json").read_text())
    (hf_folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Y"}}))
    with pytest.raises(UsageError, match="no trust_remote_code"):
        load_hf_teacher(hf_folder)


def test_a_tokenizer_wider_than_the_teachers_output_is_refused(tmp_path, hf_folder):
    narrow = tmp_path / "narrow-gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=200, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(narrow)
    prepare_text(load_corpus(str(tmp_path / "docs")), BYTES, tmp_path / "bytes.h5")      # ids up to 255
    cfg = TokenLogitsConfig(teacher=narrow, text=tmp_path / "bytes.h5", out=tmp_path / "c.h5", device="cpu")
    with pytest.raises(UsageError, match="makes ids up to 255, past the teacher's 200 outputs"):
        write_token_logits(cfg, progress=False)
    assert not cfg.out.exists()
