"""An LM student at the edge: ONNX computes what eager computes on the test windows, int8 is kept only
within its bits-per-byte budget (and never fails the export), greedy generation is timed, and
`softcache generate` prints what the student writes."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.config import LMStudentConfig
from pipeline.data.windows import text_tokenizer
from pipeline.files import write_json
from pipeline.results.lm_export import export_lm_run, generate
from pipeline.student.lm_distill import train_lm_student
from pipeline.training.checkpoint import load_checkpoint
from stages.cli import main
from tests.test_lm_teacher import text_file  # noqa: F401  (the fixture)
from tests.test_report import run as image_run
from tests.test_token_dataset import token_cache  # noqa: F401  (the fixture)
from tests.test_token_pass import lm_teacher  # noqa: F401  (the fixture)


@pytest.fixture
def student_run(tmp_path, token_cache, text_file):  # noqa: F811
    cfg = LMStudentConfig(cache=token_cache, text=text_file, out_dir=tmp_path / "run", student="lm-tiny", T=2.0,
                          alpha=0.5, steps=8, batch_size=4, eval_every=8, eval_windows=4, threads=1)
    train_lm_student(cfg, progress=False)
    return cfg.out_dir


def test_onnx_matches_eager_and_int8_keeps_to_its_budget(student_run, text_file):  # noqa: F811
    r = export_lm_run(student_run, text_file, windows=16)
    assert r["files"]["onnx"]["max_abs_diff"] <= 1e-4 and (student_run / "export" / "model.onnx").is_file()
    assert ("int8" in r["files"]) != ("int8" in r["refused"]) and r["greedy_tokens_per_second_1thread"] > 0
    assert json.loads((student_run / "export" / "export.json").read_text())["files"] == r["files"]
    strict = export_lm_run(student_run, text_file, student_run / "strict", windows=16, int8_budget_bpb=-1.0)
    assert "int8" in strict["refused"] and not (student_run / "strict" / "model.int8.onnx").exists()


def test_generate_prints_what_the_student_writes(student_run, text_file, capsys):  # noqa: F811
    model, _ = load_checkpoint(student_run / "model.pt", "lm", "student")
    ids = generate(model, list(b"def "), 40)            # the window slides past the context of 16
    assert len(ids) == 40 and all(0 <= i < 256 for i in ids)
    with pytest.raises(SystemExit) as done:
        main(["generate", "--run-dir", str(student_run), "--text", str(text_file), "--prompt", "def ", "--tokens", "40"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and out.startswith("def ") and text_tokenizer(text_file).decode(ids) in out


def test_softcache_export_takes_an_lm_run(student_run, capsys):
    with pytest.raises(SystemExit) as done:
        main(["export", "--run-dir", str(student_run), "--threads", "1"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "onnx max |Δlogit|" in out and "pt2 max |Δlogit|" in out and (student_run / "export" / "export.json").is_file()


def test_the_report_compares_lm_runs_and_shows_what_they_write(tmp_path, token_cache, text_file):  # noqa: F811
    """Scratch and distilled runs beside an image run's folder: the LM table holds both arms with the gain
    over scratch, the export table its parity, and the sample each exported run's own greedy continuation."""
    from pipeline.results.lm_report import collect_lm_runs, summarize_lm
    from pipeline.results.report import write_report
    runs = tmp_path / "runs"
    for alpha in (0.0, 0.5):
        cfg = LMStudentConfig(cache=token_cache, text=text_file, out_dir=runs / f"lm-tiny-a{alpha}", student="lm-tiny",
                              T=2.0, alpha=alpha, steps=8, batch_size=4, eval_every=8, eval_windows=4, threads=1)
        train_lm_student(cfg, progress=False)
    e = export_lm_run(runs / "lm-tiny-a0.5", text_file, windows=8, generate_tokens=24)
    assert len(e["sample"]["prompt"]) > 0 and len(e["sample"]["continuation"].encode()) >= 20
    rows = summarize_lm(collect_lm_runs(runs))
    assert [r["arm"] for r in rows] == ["scratch", "KD T=2 ALPHA=0.5 k=8"] and rows[0]["gain"] is None
    assert rows[1]["gain"] == pytest.approx(rows[0]["bpb"] - rows[1]["bpb"])
    # a seed of another teacher, or of another text of the same file name, is another row, never a seed of these
    other = tmp_path / "other-runs"
    shutil.copytree(runs, other)
    for name, change in (("kd-other-teacher", {"teacher_fingerprint": "f" * 16, "seed": 1}),
                         ("scratch-other-text", {"text_fingerprint": "e" * 16, "seed": 1})):
        source = other / ("lm-tiny-a0.5" if name.startswith("kd") else "lm-tiny-a0.0")
        write_json(other / name / "metrics.json", {**json.loads((source / "metrics.json").read_text()), **change})
    split = summarize_lm(collect_lm_runs(other))
    assert len(split) == 4 and all(len(r["seeds"]) == 1 for r in split), [(r["arm"], r["seeds"]) for r in split]
    assert sorted(r["teacher_fingerprint"] for r in split if r["arm"] != "scratch") == sorted(
        ["f" * 16, rows[1]["teacher_fingerprint"]])
    text = write_report(runs, tmp_path / "reports" / "report.md")
    assert "## Language-model students" in text and f"| {rows[1]['gain']:+.3f} |" in text
    assert f"{e['files']['onnx']['max_abs_diff']:.1e}" in text
    assert e["sample"]["prompt"] + "⟨" + e["sample"]["continuation"] + "⟩" in text
    assert "No finished student runs" not in text      # no image run: no empty image table

    # `make demo` then `make demo DATASET=stdlib` leave image and LM runs, each exported, in one folder
    write_json(runs / "a-scratch" / "metrics.json", image_run("a", 0, 0, 0.8))
    write_json(runs / "a-scratch" / "export" / "export.json", {
        "files": {"onnx": {"bytes": 2048}}, "test_acc": {"eager": 0.8, "onnx": 0.8},
        "latency_us_batch1_1thread": {"eager": 100.0, "onnx": 40.0}})
    both = write_report(runs, tmp_path / "reports" / "report.md")
    assert "| a-scratch | 2.0 | — | — | 80.00 → — | 100 | — | 40 | — |" in both
    assert "lm-tiny-a0.5 |" not in both.split("## Edge export")[1].split("## Language-model")[0]
    assert f"{e['files']['onnx']['max_abs_diff']:.1e}" in both


def test_a_foreign_lm_record_in_the_runs_folder_is_one_line(tmp_path):
    from pipeline.errors import UsageError
    from pipeline.results.lm_report import collect_lm_runs
    (tmp_path / "someone").mkdir()
    (tmp_path / "someone" / "metrics.json").write_text(json.dumps({"kind": "lm", "student": "lm-tiny"}))
    with pytest.raises(UsageError, match="is not the record of an LM run softcache finished .'steps' is None."):
        collect_lm_runs(tmp_path)


def test_formats_choose_what_an_lm_export_makes(tmp_path, student_run, capsys):
    """FORMATS reaches a language model's export as an image student's: TorchScript alone is made and checked,
    no ONNX file is left beside it."""
    with pytest.raises(SystemExit) as done:
        main(["export", "--run-dir", str(student_run), "--threads", "1", "--formats", "torchscript",
              "--out-dir", str(tmp_path / "ts")])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "torchscript max |Δlogit|" in out
    assert sorted(p.name for p in (tmp_path / "ts").iterdir()) == ["export.json", "model.torchscript.pt"]
    import torch
    module = torch.jit.load(str(tmp_path / "ts" / "model.torchscript.pt"))
    ids = torch.zeros(1, 5, dtype=torch.int64)                # a shorter window than it was traced with
    model, _ = load_checkpoint(student_run / "model.pt", "lm", "student")
    with torch.no_grad():
        assert torch.allclose(module(ids), model(ids), atol=1e-5)
