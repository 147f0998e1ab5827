"""Hostile and careless text inputs (the text side of the hostile-input suite): corpora that would carry
other files into a teacher, crafted Arrow files, text that is not text, documents past the size limit.
Every case goes through the data stage's CLI and asserts one line on stderr, exit status 2, no traceback
and nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.data import text as text_module
from pipeline.data.image_folder import list_folder, read_images
from pipeline.data.text import load_corpus
from pipeline.data.tokenizers import BYTES, load_tokenizer, train_bpe
from pipeline.data.windows import prepare_text
from pipeline.errors import UsageError
from pipeline.teacher.hf_source import load_hf_teacher
from stages.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def prepare(corpus, out, capsys, tokenizer="bytes"):
    code, _, err = run_cli(["data", "--dataset", corpus, "--tokenizer", tokenizer, "--out", out], capsys)
    return code, err


def assert_refused(code, err, out: Path, match: str):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]
    assert not out.exists() and not list(out.parent.glob(out.name + "*")), "something was written"


def write_docs(folder: Path, n: int = 80) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i:03d}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 3)
    return folder


# --- links: a folder is read as what lies inside it ---------------------------------------------------

@pytest.mark.parametrize("target", ["secret-file", "/proc/self/environ", "secret-dir"])
def test_a_corpus_folder_link_out_of_the_folder_is_refused_by_name(tmp_path, capsys, target):
    secret = tmp_path / "secret-file"
    secret.write_text("API_KEY=do-not-train-on-me\n")
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "k.py").write_text("KEY = 1\n")
    docs = write_docs(tmp_path / "docs")
    link = docs / "sub" / "notes.py"
    link.parent.mkdir()
    link.symlink_to(target if target.startswith("/") else tmp_path / target)
    out = tmp_path / "out" / "text.h5"
    code, err = prepare(docs, out, capsys)
    assert_refused(code, err, out, "sub/notes.py' is a link out of the folder")


def test_a_link_inside_the_corpus_folder_is_read_once_as_its_target(tmp_path):
    docs = write_docs(tmp_path / "docs")
    (docs / "alias.py").symlink_to(docs / "doc001.py")
    (docs / "again").symlink_to(docs, target_is_directory=True)      # a loop, inside: never descended into
    corpus = load_corpus(str(docs))
    names = [n for split in corpus.documents.values() for n in split]
    assert "alias.py" in names and not any(n.startswith("again/") for n in names) and len(names) == 81


def test_a_corpus_folder_that_is_itself_a_link_is_read_where_it_points(tmp_path):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "link").symlink_to(docs, target_is_directory=True)
    assert load_corpus(str(tmp_path / "link")).fingerprint == load_corpus(str(docs)).fingerprint


def test_pipes_and_devices_in_a_corpus_folder_are_no_documents(tmp_path):
    docs = write_docs(tmp_path / "docs")
    os.mkfifo(docs / "pipe.py")       # reading it would block forever
    names = [n for split in load_corpus(str(docs)).documents.values() for n in split]
    assert "pipe.py" not in names and len(names) == 80


def _image_folder(root: Path) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_image_folders_follow_the_same_rule(tmp_path):
    outside = tmp_path / "elsewhere.png"
    root = _image_folder(tmp_path / "images")
    (root / "train" / "a" / "0.png").rename(outside)
    (root / "train" / "a" / "0.png").symlink_to(outside)
    with pytest.raises(UsageError, match="0.png' is a link out of the folder"):
        list_folder(root)
    with pytest.raises(UsageError, match="link out of the folder"):
        read_images(root, (1, 8, 8))
    (root / "train" / "a" / "0.png").unlink()
    (root / "train" / "a" / "0.png").symlink_to(root / "test" / "a" / "0.png")     # inside: read
    assert "train/a/0.png" in list_folder(root).paths
    (tmp_path / "cls").mkdir()
    (root / "train" / "c").symlink_to(tmp_path / "cls", target_is_directory=True)   # a class folder out of it
    with pytest.raises(UsageError, match="is a link out of"):
        list_folder(root)


# --- text that is not text ---------------------------------------------------------------------------

JSONL_CASES = [
    (b'{"text": "\\ud800 lone"}\n', "lone surrogate"),
    (b'{"text": "caf\xe9"}\n', "is not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "nests too deeply"),
    (b'{"text": 3}\n', "no 'text' string field"),
    (b"not json\n", "is not JSON"),
]


@pytest.mark.parametrize("line,match", JSONL_CASES)
def test_a_bad_jsonl_line_is_named_in_one_line(tmp_path, capsys, line, match):
    good = [json.dumps({"text": f"document {i} " * 4}).encode() + b"\n" for i in range(60)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"".join(good[:3]) + b"\n" + line + b"".join(good[3:]))
    out = tmp_path / "out" / "text.h5"
    code, err = prepare(corpus, out, capsys)
    assert_refused(code, err, out, match)


def test_a_non_utf8_file_name_in_a_corpus_folder_is_named_by_its_bytes(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs")
    (Path(os.fsdecode(bytes(docs))) / os.fsdecode(b"caf\xe9.py")).write_text("x = 1\n")
    out = tmp_path / "out" / "text.h5"
    code, err = prepare(docs, out, capsys)
    assert_refused(code, err, out, "b'caf\\xe9.py' is not UTF-8")


def test_a_document_past_the_limit_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    """A sparse 64 GB file: read whole it would take the machine's memory; refused, it costs one bounded read."""
    docs = write_docs(tmp_path / "docs")
    with open(docs / "big.py", "wb") as f:
        f.truncate(64 << 30)
    with pytest.raises(UsageError, match="big.py holds 68,719,476,736 bytes, more than a text document"):
        load_corpus(str(docs))
    monkeypatch.setattr(text_module, "_MAX_DOCUMENT_BYTES", 1000)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(40))
                      + json.dumps({"text": "y" * 3000}) + "\n")
    with pytest.raises(UsageError, match="line 41 is longer than"):
        load_corpus(str(corpus))


# --- Arrow and Parquet: validated before a buffer is touched ------------------------------------------

def _arrow_file(path: Path, texts) -> bytes:
    table = pa.table({"text": texts})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path.read_bytes()


@pytest.mark.parametrize("edit", ["offset past the data", "offsets backwards", "not utf-8"])
def test_a_crafted_arrow_file_is_refused_not_read_past_its_end(tmp_path, capsys, edit):
    path = tmp_path / "c.arrow"
    data = bytearray(_arrow_file(path, [f"document {i:02d}" for i in range(40)]))
    offsets = np.arange(41, dtype=np.int32) * 11
    start = bytes(data).find(offsets.tobytes())
    assert start > 0, "the offsets buffer was not found"
    if edit == "offset past the data":
        data[start + 4 * 40:start + 4 * 41] = np.int32(2**31 - 1).tobytes()
    elif edit == "offsets backwards":
        data[start + 4 * 5:start + 4 * 6] = np.int32(-1000).tobytes()
    else:
        first = bytes(data).find(b"document 00")
        data[first:first + 2] = b"\xff\xfe"
    path.write_bytes(bytes(data))
    out = tmp_path / "out" / "text.h5"
    code, err = prepare(path, out, capsys)
    assert_refused(code, err, out, "is not a readable arrow file")


def test_a_sound_arrow_file_still_reads(tmp_path):
    path = tmp_path / "c.arrow"
    _arrow_file(path, [f"document {i:02d}" for i in range(40)])
    corpus = load_corpus(str(path))
    assert sum(len(v) for v in corpus.documents.values()) == 40


# --- the teacher: identified by what is loaded, over the text of its own tokenizer ---------------------

@pytest.fixture
def gpt2_folder(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    folder = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=320, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(
        folder, safe_serialization=True)
    return folder


@pytest.fixture
def byte_text(tmp_path):
    out = tmp_path / "bytes.h5"
    prepare_text(load_corpus(str(write_docs(tmp_path / "docs"))), BYTES, out)
    return out


def token_pass(capsys, teacher, text, out):
    capsys.readouterr()         # what the fixtures printed (transformers' save bars) is not the pass's
    return run_cli(["token-logits", "--teacher", teacher, "--text", text, "--out", out, "--context", "16",
                    "--device", "cpu"], capsys)


def test_a_wider_teacher_over_byte_ids_is_refused(tmp_path, capsys, gpt2_folder, byte_text):
    out = tmp_path / "cache.h5"
    code, _, err = token_pass(capsys, gpt2_folder, byte_text, out)
    assert_refused(code, err, out, "nothing proves they are one tokenizer")
    bpe = train_bpe(load_corpus(str(tmp_path / "docs")), 300)
    (gpt2_folder / "tokenizer.json").write_text(bpe.definition)   # the folder's own tokenizer, not the text's
    code, _, err = token_pass(capsys, gpt2_folder, byte_text, out)
    assert_refused(code, err, out, "reads the ids of another tokenizer")
    prepare_text(load_corpus(str(tmp_path / "docs")), load_tokenizer(str(gpt2_folder)), tmp_path / "own.h5")
    code, _, err = token_pass(capsys, gpt2_folder, tmp_path / "own.h5", out)
    assert code == 0 and out.is_file(), err


def test_a_softcache_teacher_reads_only_the_tokenizer_it_learned(tmp_path, capsys, byte_text):
    from pipeline.config import LMTeacherConfig
    from pipeline.teacher.lm_fit import train_lm_teacher
    teacher = tmp_path / "teacher"
    train_lm_teacher(LMTeacherConfig(text=byte_text, out_dir=teacher, arch="lm-tiny", context=16, steps=2,
                                     batch_size=2, eval_every=1, eval_windows=2, device="cpu", threads=1),
                     progress=False)
    bpe = tmp_path / "bpe.h5"
    prepare_text(load_corpus(str(tmp_path / "docs")), train_bpe(load_corpus(str(tmp_path / "docs")), 257), bpe)
    out = tmp_path / "cache.h5"
    code, _, err = token_pass(capsys, teacher / "teacher.pt", bpe, out)     # 257 ids: one past its 256 outputs
    assert_refused(code, err, out, "reads the ids of another tokenizer")


def test_a_teacher_is_known_by_what_is_loaded(tmp_path, gpt2_folder):
    from safetensors.torch import load_file, save_file
    _, first = load_hf_teacher(gpt2_folder)
    twin = tmp_path / "elsewhere" / gpt2_folder.name          # another folder of the same name, same files
    shutil.copytree(gpt2_folder, twin)
    assert load_hf_teacher(twin)[1]["fingerprint"] == first["fingerprint"]
    weights = gpt2_folder / "model.safetensors"
    tensors = load_file(weights)
    tensors["transformer.h.0.mlp.c_fc.bias"] = tensors["transformer.h.0.mlp.c_fc.bias"] + 1
    save_file(tensors, weights, metadata={"format": "pt"})      # overwritten in place, same name and size
    assert load_hf_teacher(gpt2_folder)[1]["fingerprint"] != first["fingerprint"]
    shard = twin / "shards" / "model.safetensors"               # weights in a subfolder are what is loaded too
    shard.parent.mkdir()
    (twin / "model.safetensors").rename(shard)
    with pytest.raises(UsageError):
        load_hf_teacher(twin)


def test_a_folder_missing_a_weight_is_refused_not_drawn_at_random(tmp_path, gpt2_folder):
    from safetensors.torch import load_file, save_file
    weights = gpt2_folder / "model.safetensors"
    tensors = load_file(weights)
    del tensors["transformer.h.0.attn.c_attn.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(UsageError, match="its weights do not match its config .missing keys: "):
        load_hf_teacher(gpt2_folder)


@pytest.mark.parametrize("edit,match", [
    ("truncated config", "config.json is not a readable JSON config"),
    ("config not an object", "is not a config"),
    ("quantization_config", "asks for quantized weights"),
    ("absurd context", "no context length"),
    ("safetensors header", "transformers cannot load it"),
    ("safetensors truncated", "transformers cannot load it"),
    ("wrong shape", "transformers cannot load it"),
])
def test_a_malformed_hf_folder_is_one_line(tmp_path, capsys, gpt2_folder, byte_text, edit, match):
    config_path, weights = gpt2_folder / "config.json", gpt2_folder / "model.safetensors"
    config = json.loads(config_path.read_text())
    if edit == "truncated config":
        config_path.write_text(config_path.read_text()[:40])
    elif edit == "config not an object":
        config_path.write_text("[1, 2]")
    elif edit == "quantization_config":
        config_path.write_text(json.dumps({**config, "quantization_config": {"quant_method": "bitsandbytes"}}))
    elif edit == "absurd context":
        config_path.write_text(json.dumps({**config, "n_positions": 10**12}))
    elif edit == "safetensors header":
        data = weights.read_bytes()
        weights.write_bytes((2**62).to_bytes(8, "little") + data[8:])
    elif edit == "safetensors truncated":
        weights.write_bytes(weights.read_bytes()[:-500])
    else:
        config_path.write_text(json.dumps({**config, "n_embd": 64}))
    out = tmp_path / "cache.h5"
    code, _, err = token_pass(capsys, gpt2_folder, byte_text, out)
    assert_refused(code, err, out, match)


# --- a token cache that breaks the format's own invariants, digests recomputed as anyone could ---------

GRID = (1.0, 2.0, 4.0)


def _token_cache(path: Path, topk: int = 16):
    from pipeline.cache.lm_format import token_targets, write_token_cache
    windows = {"train": 4, "val": 2, "test": 2}
    with write_token_cache(path, windows=windows, context=8, vocab_size=256, topk=topk, dtype="float16",
                           temperatures=GRID, attrs={"text_fingerprint": "t" * 16}) as writer:
        for i, (split, n) in enumerate(windows.items()):
            writer.write(split, token_targets(torch.randn(n, 8, 256, generator=torch.Generator().manual_seed(i)),
                                              topk, GRID))


def _reseal(path: Path) -> None:
    """New digests over whatever the file now holds: what a careful forger does from the documented format."""
    import h5py

    from pipeline.cache.format import ATTRS_DIGEST, attrs_digest, plain
    from pipeline.cache.lm_format import TokenDigest
    with h5py.File(path, "r+") as f:
        digest = TokenDigest()
        for split in ("train", "val", "test"):
            digest.update(split, {name: f[split][name][()] for name in f[split]})
        attrs = {k: plain(v) for k, v in f.attrs.items() if k != "digests"}
        f.attrs["digests"] = json.dumps({**digest.digests(), ATTRS_DIGEST: attrs_digest(attrs)}, sort_keys=True)


def _replace(f, name: str, values) -> None:
    del f[name]
    f.create_dataset(name, data=values)


def _duplicate_ids(f):
    ids = f["train/topk_ids"][()]
    ids[0, 0, 1] = ids[0, 0, 0]
    f["train/topk_ids"][...] = ids


def _float_ids(f):
    _replace(f, "train/topk_ids", f["train/topk_ids"][()].astype(np.float32))


def _negative_ids(f):
    ids = f["train/topk_ids"][()].astype(np.int16)
    ids[0, 0, 3] = -1
    _replace(f, "train/topk_ids", ids)


def _repeated_temperature(f):
    f.attrs["temperatures"] = np.array([1.0, 2.0, 2.0])


def _absurd_temperature(f):
    f.attrs["temperatures"] = np.array([1.0, 2.0, 1e30])


def _stride(f):
    f.attrs["stride"] = 4


def _huge_declared_windows(f):
    f.attrs["train_windows"] = 10**8
    for name in list(f["train"]):
        dtype, tail = f["train"][name].dtype, f["train"][name].shape[1:]
        del f["train"][name]
        f["train"].create_dataset(name, shape=(10**8, *tail), dtype=dtype, chunks=(64, *tail))


def _huge_declared_vocabulary(f):
    f.attrs["vocab_size"], f.attrs["topk"], f.attrs["storage"] = 1 << 31, 0, "full"
    for split in ("train", "val", "test"):
        n = int(f.attrs[f"{split}_windows"])
        for name in list(f[split]):
            del f[split][name]
        f[split].create_dataset("logits", shape=(n, 8, 1 << 31), dtype=np.float16, chunks=(1, 8, 4096))


@pytest.mark.parametrize("edit,match", [
    (_duplicate_ids, "name one token twice"), (_float_ids, "is stored as float32"),
    (_negative_ids, "is stored as int16"), (_repeated_temperature, "is not a grid of 1 to 16 different"),
    (_absurd_temperature, "is not a grid of 1 to 16 different"), (_stride, "stride 4 disagrees"),
    (_huge_declared_windows, "but the file holds"), (_huge_declared_vocabulary, "but the file holds"),
])
def test_a_resealed_token_cache_that_breaks_the_formats_invariants_is_refused(tmp_path, capsys, edit, match):
    import h5py
    path = tmp_path / "c.h5"
    _token_cache(path)
    with h5py.File(path, "r+") as f:
        edit(f)
    if edit not in (_huge_declared_windows, _huge_declared_vocabulary):      # too large to digest: not needed
        _reseal(path)
    before = path.read_bytes()
    code, _, err = run_cli(["inspect", path], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
    assert path.read_bytes() == before


# --- prepared text proves itself as caches do ------------------------------------------------------------

def _edit_token(f):
    f["train/tokens"][5] = (int(f["train/tokens"][5]) + 1) % 256


def _edit_document_start(f):
    f["val/doc_starts"][0] = 3


def _edit_attribute(f):
    f.attrs["split_seed"] = 7


def _drop_digests(f):
    del f.attrs["digests"]


@pytest.mark.parametrize("edit,match", [(_edit_token, "train/tokens differ from the digests"),
                                        (_edit_document_start, "val/doc_starts differ from the digests"),
                                        (_edit_attribute, "attrs differ from the digests"),
                                        (_drop_digests, "holds no digests")])
def test_an_edited_prepared_text_is_refused_by_every_reader(tmp_path, capsys, byte_text, edit, match):
    import h5py
    with h5py.File(byte_text, "r+") as f:
        edit(f)
    out = tmp_path / "cache.h5"
    code, _, err = run_cli(["lm-teacher", "--text", byte_text, "--out-dir", tmp_path / "t", "--steps", "1",
                            "--arch", "lm-tiny", "--context", "16", "--device", "cpu"], capsys)
    assert_refused(code, err, tmp_path / "t" / "teacher.pt", match)
    code, _, err = run_cli(["data", "--dataset", tmp_path / "docs", "--tokenizer", "bytes", "--out", byte_text],
                           capsys)
    assert code == 0, err                          # the data stage rebuilds what it cannot trust
    from pipeline.data.windows import read_text_attrs
    assert read_text_attrs(byte_text)["fingerprint"]
    assert not out.exists()


def test_a_resealed_prepared_text_with_ids_past_its_vocabulary_is_refused(tmp_path, byte_text):
    import h5py

    from pipeline.data.windows import _digests, read_text_attrs
    corpus = load_corpus(str(tmp_path / "docs"))
    bpe = tmp_path / "bpe.h5"
    prepare_text(corpus, train_bpe(corpus, 300), bpe)
    with h5py.File(bpe, "r+") as f:
        f["train/tokens"][0] = 299 + 7
        f.attrs["digests"] = json.dumps(_digests(f))
    with pytest.raises(UsageError, match="holds ids past its vocabulary of 300"):
        read_text_attrs(bpe)


# --- resumable parts prove themselves before they are sealed (token pass and image pass) -----------------

def _nan_part(path: Path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    key = "topk_logits" if "topk_logits" in arrays else next(iter(arrays))
    arrays[key] = arrays[key].copy()
    arrays[key].flat[3] = np.nan
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    seal = path.with_name(path.name.replace(".npz", ".sha256"))
    seal.write_text(hashlib.sha256(path.read_bytes()).hexdigest())      # resealed: only the values can tell


def _cut_part(path: Path):
    path.write_bytes(path.read_bytes()[:100])


def _edit_part(path: Path):
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def lm_teacher_file(tmp_path, byte_text):
    from pipeline.config import LMTeacherConfig
    from pipeline.teacher.lm_fit import train_lm_teacher
    train_lm_teacher(LMTeacherConfig(text=byte_text, out_dir=tmp_path / "teacher", arch="lm-tiny", context=16,
                                     steps=2, batch_size=2, eval_every=1, eval_windows=2, device="cpu", threads=1),
                     progress=False)
    return tmp_path / "teacher" / "teacher.pt"


@pytest.mark.parametrize("damage", [_nan_part, _cut_part, _edit_part])
def test_a_damaged_token_part_is_computed_again_never_sealed(tmp_path, monkeypatch, byte_text, lm_teacher_file,
                                                             damage):
    from pipeline.cache.lm_reader import TokenCache
    from pipeline.config import TokenLogitsConfig
    from pipeline.teacher import lm_pass
    cfg = TokenLogitsConfig(teacher=lm_teacher_file, text=byte_text, out=tmp_path / "c.h5", context=16, topk=4,
                            chunk_windows=4, device="cpu", threads=1)
    clean = TokenLogitsConfig(**{**cfg.__dict__, "out": tmp_path / "clean.h5"})
    lm_pass.write_token_logits(clean, progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt     # the pass stops after its parts are written, before the file is
    with monkeypatch.context() as m:
        m.setattr(lm_pass, "write_token_cache", killed)
        with pytest.raises(KeyboardInterrupt):
            lm_pass.write_token_logits(cfg, progress=False)
    parts = sorted((tmp_path / ".c.h5.parts").glob("train-*.npz"))
    assert len(parts) > 1
    damage(parts[1])
    result = lm_pass.write_token_logits(cfg, progress=False)
    assert result["windows_computed"] == 4                       # that chunk alone, computed anew
    got, want = TokenCache(cfg.out), TokenCache(clean.out)
    assert got.fingerprint == want.fingerprint                    # the same values as a pass never killed


@pytest.mark.parametrize("damage", [_cut_part, _edit_part])
def test_a_damaged_image_part_is_computed_again_never_sealed(tmp_path, monkeypatch, prepared, teacher_dir, damage):
    from pipeline.cache.reader import LogitCache
    from pipeline.config import LogitsConfig
    from pipeline.teacher import logits_pass
    cfg = LogitsConfig(teacher=teacher_dir / "teacher.pt", dataset=prepared, out=tmp_path / "c.h5", device="cpu",
                       chunk_rows=32)
    clean = LogitsConfig(**{**cfg.__dict__, "out": tmp_path / "clean.h5"})
    logits_pass.write_teacher_logits(clean, progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(logits_pass, "write_cache", killed)
        with pytest.raises(KeyboardInterrupt):
            logits_pass.write_teacher_logits(cfg, progress=False)
    parts = sorted((tmp_path / ".c.h5.parts").glob("train-*.npy"))
    damage(parts[0])
    logits_pass.write_teacher_logits(cfg, progress=False)
    assert torch.equal(LogitCache(cfg.out).logits("train"), LogitCache(clean.out).logits("train"))


def test_a_split_with_no_full_window_is_refused_never_scored_perfect(tmp_path, capsys, byte_text, lm_teacher_file):
    from pipeline.data.windows import read_text_attrs
    context = read_text_attrs(byte_text)["val_tokens"] + 5          # longer than the whole validation split
    out = tmp_path / "t2" / "teacher.pt"
    code, _, err = run_cli(["lm-teacher", "--text", byte_text, "--out-dir", out.parent, "--steps", "1",
                            "--arch", "lm-tiny", "--context", context, "--device", "cpu"], capsys)
    assert_refused(code, err, out, "not one full window")
    cache = tmp_path / "c.h5"
    code, _, err = run_cli(["token-logits", "--teacher", lm_teacher_file, "--text", byte_text, "--out", cache,
                            "--context", "16", "--device", "cpu"], capsys)
    assert code == 0, err
    from pipeline.data.windows import TokenWindows
    from pipeline.models import create_lm
    from pipeline.teacher.lm_fit import train_lm_teacher  # noqa: F401  (the stage the student shares the rule with)
    from pipeline.training.lm_loop import bits_per_byte
    with pytest.raises(UsageError, match="not one full window"):
        bits_per_byte(create_lm("lm-tiny", vocab_size=256, context=context), TokenWindows(byte_text, "val", context),
                      np.ones(256))


def test_make_plans_the_pass_again_when_the_teachers_files_change(tmp_path, gpt2_folder):
    """The planner's stamp for a file teacher holds where it lies and what it holds, so Make reruns the pass
    for another folder of the same name and for weights overwritten in place (the pass then fingerprints
    what it loads)."""
    from pipeline.make_plan import plan

    def stamp(teacher: Path) -> str:
        p = plan({"DATASET": "stdlib", "TEACHER": str(teacher), "DATA_DIR": str(tmp_path / "d")}, environ={},
                 goals=["teacher-logits"])
        return p.stamps()[p.teacher_stamp]

    first = stamp(gpt2_folder)
    assert stamp(gpt2_folder) == first
    twin = tmp_path / "elsewhere" / gpt2_folder.name
    shutil.copytree(gpt2_folder, twin)
    assert stamp(twin) != first                                   # same name, another place
    weights = gpt2_folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert stamp(gpt2_folder) != first                            # overwritten in place


# --- the text API's garbage arguments, absurd checkpoints, generate --------------------------------------

def test_the_text_api_refuses_garbage_arguments_in_one_line(tmp_path, byte_text, lm_teacher_file):
    from pipeline.cache.lm_dataset import TokenTargetDataset
    from pipeline.config import TokenLogitsConfig
    from pipeline.losses import token_kd_loss
    from pipeline.models import create_lm
    from pipeline.teacher.lm_pass import write_token_logits
    cache = tmp_path / "c.h5"
    write_token_logits(TokenLogitsConfig(teacher=lm_teacher_file, text=byte_text, out=cache, context=16, topk=4,
                                         device="cpu", threads=1), progress=False)
    with pytest.raises(UsageError, match="T must be a number"):
        TokenTargetDataset(cache, byte_text, T=0)
    for vocab, context in ((0, 16), (256, 0), (2**40, 16), (256, 2**40), (256.5, 16)):
        with pytest.raises(UsageError, match="must be a whole number"):
            create_lm("lm-tiny", vocab_size=vocab, context=context)
    data = TokenTargetDataset(cache, byte_text, T=2.0)
    tokens, ids, log_p, log_tail = (torch.stack(x) for x in zip(data[0], data[1]))
    student = torch.randn(2, 16, 256)
    token_kd_loss(student, tokens[:, 1:], ids, log_p, log_tail, T=2.0, alpha=0.5)      # fine
    with pytest.raises(ValueError, match="must be log-probabilities"):
        token_kd_loss(student, tokens[:, 1:], ids, log_p.exp(), log_tail.exp(), T=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="empty batch"):
        token_kd_loss(student[:0], tokens[:0, 1:], ids[:0], log_p[:0], log_tail[:0], T=2.0, alpha=0.5)


def test_a_checkpoint_recording_absurd_sizes_is_refused_before_it_is_built(tmp_path, capsys, lm_teacher_file,
                                                                           byte_text):
    payload = torch.load(lm_teacher_file, weights_only=True)
    payload["model_kwargs"] = {"vocab_size": 1 << 40, "context": 128}
    torch.save(payload, tmp_path / "absurd.pt")
    payload["model_kwargs"] = {"vocab_size": 256, "context": 16, "depth": 3}
    torch.save(payload, tmp_path / "extra.pt")
    for name, match in (("absurd.pt", "must be a whole number from 1 to"), ("extra.pt", "do not fit architecture")):
        out = tmp_path / f"{name}.h5"
        code, _, err = token_pass(capsys, tmp_path / name, byte_text, out)
        assert_refused(code, err, out, match)


def test_generate_speaks_only_through_the_tokenizer_the_model_learned(tmp_path, capsys, lm_teacher_file, byte_text):
    run = lm_teacher_file.parent
    code, out, err = run_cli(["generate", "--run-dir", run, "--text", byte_text, "--prompt", "def ", "--tokens", "4"],
                             capsys)
    assert code is None or code == 0, err
    corpus = load_corpus(str(tmp_path / "docs"))
    other = tmp_path / "bpe.h5"
    prepare_text(corpus, train_bpe(corpus, 300), other)
    for text, prompt, match in ((other, "def ", "another tokenizer"), (byte_text, "caf\udce9", "not UTF-8"),
                                (byte_text, "a\0b", "NUL byte")):
        code, _, err = run_cli(["generate", "--run-dir", run, "--text", text, "--prompt", prompt], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and match in lines[0], err


def test_a_student_asking_for_more_of_the_cache_than_it_holds_is_refused(tmp_path, capsys, byte_text,
                                                                          lm_teacher_file):
    cache = tmp_path / "c.h5"
    code, _, err = run_cli(["token-logits", "--teacher", lm_teacher_file, "--text", byte_text, "--out", cache,
                            "--context", "16", "--topk", "4", "--device", "cpu"], capsys)
    assert code == 0, err
    out = tmp_path / "run"
    code, _, err = run_cli(["lm-student", "--cache", cache, "--text", byte_text, "--out-dir", out, "--student",
                            "lm-tiny", "--T", "2", "--alpha", "0.5", "--steps", "2", "--topk", "8"], capsys)
    assert_refused(code, err, out / "metrics.json", "--topk 8 asks for more")


def test_a_tokenizer_that_panics_is_one_line(tmp_path, capsys):
    """A pre-tokenizer regex that backtracks past Oniguruma's retry limit makes the Rust code panic: a
    PanicException (a BaseException) and a backtrace on fd 2 where RUST_BACKTRACE is set."""
    from tokenizers import Tokenizer, models
    definition = json.loads(Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "<|endoftext|>": 2}, merges=[])).to_str())
    definition["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated",
                                   "invert": False}
    tok = tmp_path / "tok" / "tokenizer.json"
    tok.parent.mkdir()
    tok.write_text(json.dumps(definition))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(120):
        (docs / f"d{i}.txt").write_text("a" * 60 + "b")
    out = tmp_path / "out" / "text.h5"
    proc = subprocess.run([sys.executable, "-m", "stages.cli", "data", "--dataset", str(docs), "--tokenizer",
                           str(tok), "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RUST_BACKTRACE": "1"}, cwd=Path(__file__).resolve().parents[1])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "the tokenizer failed to encode (PanicException" in lines[0], \
        proc.stderr[-2000:]
    assert not out.exists()


def test_the_smaller_text_promises(tmp_path):
    """bpe-N has one limit for the settings and the trainer; token-side errors name token-side fixes in the
    caller's terms; make clean removes the prepared text too."""
    from pipeline.data.tokenizers import train_bpe as trainer
    from pipeline.errors import phrase_fix
    from pipeline.settings import BPE_TOKENS, check
    low, high = BPE_TOKENS
    check("TOKENIZER", f"bpe-{high}")
    for bad in (f"bpe-{high + 1}", f"bpe-{low - 1}", "bpe-0000300000"):
        with pytest.raises(UsageError, match="TOKENIZER must be bytes, bpe-N"):
            check("TOKENIZER", bad)
    with pytest.raises(UsageError, match=f"needs {low} to {high} tokens"):
        trainer(None, high + 1)
    assert phrase_fix("token-logits", caller="make") == "run 'make teacher-logits'"
    assert phrase_fix("token-logits", caller="cli") == "run 'softcache token-logits'"
    assert "write_token_logits(TokenLogitsConfig" in phrase_fix("token-logits", caller="python")
    assert phrase_fix("text-data", caller="cli") == "run 'softcache data'"
    plan = subprocess.run(["make", "-n", "clean", f"DATA_DIR={tmp_path}"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "MAKEFLAGS": ""}).stdout
    assert f"'{tmp_path}/text'" in plan
