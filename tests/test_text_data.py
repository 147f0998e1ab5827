"""Text corpora, tokenizers and token windows: the standard library's sources as the default corpus,
documents wholly in one split by a seeded hash of their name, fingerprints from the bytes, bad text named
in one line, and windows read back exactly as the stream was written."""

import copy
import json
import platform

import numpy as np
import pytest

from pipeline.data.text import STDLIB, is_text_corpus, load_corpus, split_of
from pipeline.data.tokenizers import BYTES, load_tokenizer, token_dtype
from pipeline.data.windows import TokenWindows, prepare_text
from pipeline.errors import UsageError


def write_docs(folder, n=60, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        words = rng.choice(["def", "return", "self", "x", "=", "(", ")", ":", "\n", "    "], size=40)
        (folder / f"doc{i:03d}.py").write_text(" ".join(words))
    return folder


def test_the_stdlib_corpus_is_this_pythons_sources_without_tests():
    corpus = load_corpus(STDLIB)
    names = [n for split in corpus.documents.values() for n in split]
    assert corpus.python == platform.python_version() and len(names) > 300
    assert not any(part in ("test", "tests", "site-packages") for n in names for part in n.split("/"))
    assert "json/decoder.py" in names and all(n.endswith(".py") for n in names)
    assert corpus.bytes_in("train") > 5 * (corpus.bytes_in("val") + corpus.bytes_in("test")) > 0


def test_a_document_lies_in_one_split_drawn_from_its_name_and_the_seed(tmp_path):
    docs = write_docs(tmp_path / "docs", n=200)
    a, b = load_corpus(str(docs), split_seed=0), load_corpus(str(docs), split_seed=1)
    for corpus in (a, b):
        every = [n for split in corpus.documents.values() for n in split]
        assert sorted(every) == sorted(set(every)) and len(every) == 200
        assert all(split_of(n, corpus.split_seed) == s for s, names in corpus.documents.items() for n in names)
    assert a.documents != b.documents and a.fingerprint == b.fingerprint      # same bytes, other split
    assert 150 < len(a.documents["train"]) < 200
    (docs / "doc000.py").write_text("changed")
    assert load_corpus(str(docs)).fingerprint != a.fingerprint


@pytest.mark.parametrize("content,match", [(b"abc\0def", "holds NUL bytes, so it is binary"),
                                           (b"\xff\xfe text", "is not UTF-8 text")])
def test_a_document_that_is_not_text_is_named_in_one_line(tmp_path, content, match):
    docs = write_docs(tmp_path / "docs")
    (docs / "bad.bin").write_bytes(content)
    with pytest.raises(UsageError, match=f"bad.bin {match}"):
        load_corpus(str(docs))


def test_jsonl_text_fields_are_documents_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i} " * 5, "id": i}) + "\n" for i in range(80)))
    corpus = load_corpus(str(path))
    assert corpus.read("corpus.jsonl:7") == ("document 7 " * 5).encode()
    assert sum(len(v) for v in corpus.documents.values()) == 80
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(UsageError, match="line 2 has no 'text' string field"):
        load_corpus(str(path))


def test_an_empty_or_unknown_corpus_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no documents"):
        load_corpus(str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="is no text corpus"):
        load_corpus(str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="TOKENIZER=wordpiece is unknown"):
        load_tokenizer("wordpiece")


def test_token_ids_use_the_smallest_type_that_holds_the_vocabulary():
    assert token_dtype(256) == np.uint8 and token_dtype(257) == np.uint16
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    assert BYTES.encode("é".encode()).tolist() == [0xC3, 0xA9]


def test_windows_read_back_the_stream_of_documents_and_separators(tmp_path):
    docs = write_docs(tmp_path / "docs", n=60)
    corpus = load_corpus(str(docs))
    attrs = prepare_text(corpus, BYTES, tmp_path / "text.h5")
    assert attrs["corpus_fingerprint"] == corpus.fingerprint and attrs["tokenizer"] == "bytes"
    stream = b"".join(corpus.read(n) + b"\0" for n in corpus.documents["train"])
    assert attrs["train_tokens"] == len(stream)
    context, stride = 16, 8
    windows = TokenWindows(tmp_path / "text.h5", "train", context, stride)
    assert len(windows) == (len(stream) - 1 - context) // stride + 1
    last = len(windows) - 1
    batch = windows.batch([0, 3, last])
    for row, i in zip(batch.tolist(), [0, 3, last]):
        assert bytes(row) == stream[i * stride: i * stride + context + 1]
    with pytest.raises(IndexError):
        windows.batch([last + 1])
    clone = copy.deepcopy(windows)      # through __getstate__, as a DataLoader worker receives it: no open handle
    assert clone.batch([3]).tolist() == batch[1:2].tolist()
    with pytest.raises(UsageError, match="not a prepared text file"):
        TokenWindows(docs / "doc000.py", "train", 16)


def test_a_bpe_trained_here_is_fingerprinted_and_its_windows_hold_its_ids(tmp_path):
    corpus = load_corpus(STDLIB)
    bpe = load_tokenizer("bpe-1024", corpus)
    assert bpe.vocab_size == 1024 and bpe.separator == 0       # <|endoftext|> is its first token
    again = load_tokenizer("bpe-1024", corpus)
    assert again.fingerprint == bpe.fingerprint                # trained deterministically from the same text
    text = corpus.read(corpus.documents["val"][0])
    ids = bpe.encode(text)
    assert ids.dtype == np.uint16 and len(ids) < len(text) / 2    # merges compress real source code
    saved = tmp_path / "tokenizer.json"
    saved.write_text(bpe.definition)
    local = load_tokenizer(str(tmp_path))                      # a folder holding tokenizer.json
    assert local.fingerprint == bpe.fingerprint and local.encode(text).tolist() == ids.tolist()
    saved.write_text("{not a tokenizer")
    with pytest.raises(UsageError, match="is not a tokenizer.json the tokenizers library reads"):
        load_tokenizer(str(saved))


def test_limit_draws_documents_up_to_n_bytes_for_training_and_a_tenth_for_evaluation(tmp_path):
    from pipeline.data.text import limit_train
    corpus = load_corpus(str(write_docs(tmp_path / "docs", n=400)))
    small = limit_train(corpus, 2000)
    assert 0 < small.bytes_in("train") <= 2000 < corpus.bytes_in("train")
    for split in ("val", "test"):
        assert 0 < small.bytes_in(split) <= 200 < corpus.bytes_in(split)
    for split, names in small.documents.items():    # drawn from the split, not its first names, in its order
        every = corpus.documents[split]
        assert set(names) <= set(every) and list(names) == [n for n in every if n in names]
    assert small.documents["train"] != corpus.documents["train"][:len(small.documents["train"])]
    assert limit_train(corpus, 2000) == small                                    # the draw is fixed
    assert small.fingerprint != corpus.fingerprint != limit_train(corpus, 3000).fingerprint
    assert all(len(docs) == 1 for docs in limit_train(corpus, 1).documents.values())     # never empty


@pytest.mark.parametrize("suffix, write", [
    (".parquet", lambda table, path: __import__("pyarrow.parquet").parquet.write_table(table, path)),
    (".arrow", lambda table, path: _arrow(table, path, stream=True)),       # as Hugging Face datasets saves it
    (".arrow", lambda table, path: _arrow(table, path, stream=False)),
])
def test_parquet_and_arrow_text_columns_are_documents(tmp_path, suffix, write):
    import pyarrow as pa
    path = tmp_path / f"corpus{suffix}"
    texts = [f"document {i} " * 5 for i in range(80)]
    write(pa.table({"text": texts, "id": list(range(80))}), path)
    corpus = load_corpus(str(path))
    assert corpus.read(f"corpus{suffix}:7") == texts[7].encode() and is_text_corpus(str(path))
    assert sum(len(v) for v in corpus.documents.values()) == 80
    write(pa.table({"body": texts}), path)
    with pytest.raises(UsageError, match="has no 'text' column of strings"):
        load_corpus(str(path))
    write(pa.table({"text": ["fine", None] * 40}), path)
    with pytest.raises(UsageError, match="row 2 has no text"):
        load_corpus(str(path))
    path.write_bytes(b"not a table at all")
    with pytest.raises(UsageError, match="is not a readable"):
        load_corpus(str(path))


def _arrow(table, path, stream: bool) -> None:
    import pyarrow as pa
    opener = pa.ipc.new_stream if stream else pa.ipc.new_file
    with pa.OSFile(str(path), "wb") as sink, opener(sink, table.schema) as writer:
        writer.write_table(table)


def test_the_data_stage_prepares_a_limited_text_subset(tmp_path):
    """LIMIT through the data stage itself (it once reached the image datasets' limit and failed)."""
    from pipeline.config import DataConfig
    from pipeline.data.prepare import prepare_corpus
    docs = write_docs(tmp_path / "docs", n=120)
    whole = prepare_corpus(DataConfig(out=tmp_path / "whole.h5", dataset=str(docs), limit=0))
    small = prepare_corpus(DataConfig(out=tmp_path / "small.h5", dataset=str(docs), limit=2000))
    # tokens: the documents' bytes and one separator after each
    assert 0 < small["train_tokens"] <= 2100 < whole["train_tokens"]
    assert 0 < small["test_tokens"] <= 220 < whole["test_tokens"] and small["fingerprint"] != whole["fingerprint"]


def test_a_limited_text_reads_the_ids_of_the_whole_corpuss_bpe(tmp_path):
    """bpe-N learns from the whole corpus's train split under LIMIT too: a quick run's text reads the same
    ids as a teacher trained (or published) on the whole."""
    from pipeline.config import DataConfig
    from pipeline.data.prepare import prepare_corpus
    from pipeline.data.tokenizers import train_bpe
    docs = write_docs(tmp_path / "docs", n=120)
    small = prepare_corpus(DataConfig(out=tmp_path / "small.h5", dataset=str(docs), limit=2000, tokenizer="bpe-300"))
    whole = train_bpe(load_corpus(str(docs)), 300)
    assert small["tokenizer_fingerprint"] == whole.fingerprint
    assert train_bpe(load_corpus(str(docs)), 300).fingerprint == whole.fingerprint       # deterministic
