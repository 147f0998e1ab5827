"""Hostile and careless text inputs (the text side of the hostile-input suite): corpora that would carry
other files into a teacher, crafted Arrow files, text that is not text, documents past the size limit.
Every case goes through the data stage's CLI and asserts one line on stderr, exit status 2, no traceback
and nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.data import text as text_module
from pipeline.data.image_folder import list_folder, read_images
from pipeline.data.text import load_corpus
from pipeline.errors import UsageError
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


def write_docs(folder: Path, n: int = 40) -> Path:
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
    assert "alias.py" in names and not any(n.startswith("again/") for n in names) and len(names) == 41


def test_a_corpus_folder_that_is_itself_a_link_is_read_where_it_points(tmp_path):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "link").symlink_to(docs, target_is_directory=True)
    assert load_corpus(str(tmp_path / "link")).fingerprint == load_corpus(str(docs)).fingerprint


def test_pipes_and_devices_in_a_corpus_folder_are_no_documents(tmp_path):
    docs = write_docs(tmp_path / "docs")
    os.mkfifo(docs / "pipe.py")       # reading it would block forever
    names = [n for split in load_corpus(str(docs)).documents.values() for n in split]
    assert "pipe.py" not in names and len(names) == 40


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
