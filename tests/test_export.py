"""Edge export: the exported files compute what the trained student computes, carry
their own metadata, and a failed export leaves nothing behind."""

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipeline.config import ExportConfig
from pipeline.errors import UsageError
from pipeline.models import create_student
from pipeline.models.images import image_students
from pipeline.results.export import (
    export_onnx,
    export_run,
    export_torchscript,
)
from pipeline.results.latency import onnx_runner, onnx_session, pt2_runner, torchscript_runner
from pipeline.teacher.source import load_teacher
from tests.conftest import CLASSES, SHAPE

README = Path(__file__).resolve().parents[1] / "docs" / "GUIDE.md"   # the guide holds the tested examples


def test_export_writes_checked_files_with_metadata(tmp_path, student_run, tiny_dataset):
    report = export_run(ExportConfig(run_dir=student_run))
    out = student_run / "export"
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.int8.onnx", "model.onnx", "model.pt2"]
    assert json.loads((out / "export.json").read_text()) == report
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)

    x = tiny_dataset.x_test.astype(np.float32) / 255
    from pipeline.training.checkpoint import load_checkpoint
    model, _ = load_checkpoint(student_run / "model.pt", "student", "student")
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).numpy()
    teacher = load_teacher(out / "model.pt2")           # an exported student can teach: plain tensors only
    for run in (onnx_runner(out / "model.onnx"), pt2_runner(out / "model.pt2"),
                lambda a: teacher.model(torch.from_numpy(a)).detach().numpy()):
        got = run(x)
        assert np.abs(got - eager).max() <= 1e-4
        assert (got.argmax(1) == eager.argmax(1)).all()
    assert report["parity"]["onnx"]["argmax_agreement"] == 1.0
    assert report["int8_acc_change_pp"] >= -0.5 and report["int8_size_ratio"] < 1
    assert set(report["latency_us_batch1_1thread"]) == {"eager", "onnx", "pt2", "int8"}

    session = onnx_session(out / "model.int8.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(CLASSES)
    assert json.loads(meta["softcache"])["input"]["shape"] == ["N", *SHAPE]
    extra = {"softcache.json": ""}
    torch.export.load(str(out / "model.pt2"), extra_files=extra)
    assert json.loads(extra["softcache.json"])["class_names"] == list(CLASSES)


@pytest.mark.parametrize("name", image_students())
def test_every_student_exports_with_parity_and_any_batch_size(tmp_path, name):
    torch.manual_seed(0)
    model = create_student(name, in_shape=SHAPE, num_classes=3).eval()
    meta = {"student": name, "class_names": list(CLASSES)}
    example = torch.rand(2, *SHAPE)
    export_onnx(model, example, tmp_path / "m.onnx", meta)
    export_torchscript(model, example, tmp_path / "m.pt", meta)
    for batch in (1, 7):
        x = np.random.default_rng(batch).random((batch, *SHAPE), dtype=np.float32)
        with torch.no_grad():
            eager = model(torch.from_numpy(x)).numpy()
        assert np.abs(onnx_runner(tmp_path / "m.onnx")(x) - eager).max() <= 1e-4
        assert np.abs(torchscript_runner(tmp_path / "m.pt")(x) - eager).max() <= 1e-4


def test_failed_parity_writes_nothing_and_keeps_the_old_export(student_run):
    export_run(ExportConfig(run_dir=student_run, formats=("onnx",)))
    before = (student_run / "export" / "export.json").read_bytes()
    with pytest.raises(UsageError, match="does not compute what the trained student computes"):
        export_run(ExportConfig(run_dir=student_run, formats=("onnx", "torchscript"), parity_atol=1e-30))
    assert (student_run / "export" / "export.json").read_bytes() == before
    assert sorted(p.name for p in student_run.iterdir()) == ["export", "metrics.json", "model.pt"]


def test_run_without_a_finished_model_is_refused(tmp_path):
    (tmp_path / "half-run").mkdir()
    with pytest.raises(UsageError, match="no finished student run"):
        export_run(ExportConfig(run_dir=tmp_path / "half-run"))
    assert list((tmp_path / "half-run").iterdir()) == []


@pytest.mark.parametrize("formats,match", [(("onnx", "tflite"), "unknown export format 'tflite'"),
                                           ((), "unknown export format")])
def test_unknown_format_is_refused(tmp_path, formats, match):
    with pytest.raises(UsageError, match=match):
        ExportConfig(run_dir=tmp_path, formats=formats)


def test_int8_alone_brings_its_onnx_source(tmp_path):
    assert ExportConfig(run_dir=tmp_path, formats=("int8",)).formats == ("onnx", "int8")


def test_unwritable_output_is_one_line_and_leaves_nothing(tmp_path, student_run):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError, match="cannot write the export to .*choose a writable --out-dir"):
        export_run(ExportConfig(run_dir=student_run, out_dir=blocker / "export"))
    assert blocker.read_text() == "not a directory"
    assert not (student_run / "export").exists()


def test_cli_errors_are_one_line_exit_2(tmp_path, student_run):
    for args, match in ((["--formats", "onnx,bogus"], "unknown export format 'bogus'"),
                        (["--run-dir", str(tmp_path / "nope")], "no finished student run")):
        argv = ["--run-dir", str(student_run)] + args if args[0] == "--formats" else args
        proc = subprocess.run([sys.executable, "-m", "stages.cli", "export", *argv], capture_output=True, text=True)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and match in proc.stderr


def test_readme_example_classifies_with_onnxruntime_alone(tmp_path):
    """The guide's snippet runs in a fresh interpreter where importing torch fails."""
    code = re.search(r"<!-- onnx-example -->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
    torch.manual_seed(0)
    model = create_student("cnn-tiny").eval()
    export_onnx(model, torch.rand(2, 1, 28, 28), tmp_path / "model.onnx",
                {"student": "cnn-tiny", "class_names": [f"class-{i}" for i in range(10)]})
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    with gzip.open(tmp_path / "images.gz", "wb") as f:
        f.write(np.array([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28], np.uint8).tobytes() + images.tobytes())
    code = re.sub(r'MODEL = ".*"', f'MODEL = "{tmp_path / "model.onnx"}"', code)
    code = re.sub(r'IMAGES = ".*"', f'IMAGES = "{tmp_path / "images.gz"}"', code)
    blocked = "import sys; sys.modules['torch'] = None\n"
    proc = subprocess.run([sys.executable, "-c", blocked + code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        expected = model(torch.from_numpy(images[:1, None].astype(np.float32) / 255)).argmax(1).item()
    assert proc.stdout.strip().endswith(f"class-{expected}")


@pytest.fixture
def int8_hostile_run(tmp_path, prepared, cache_file) -> Path:
    """A real mlp run whose hidden units are rescaled by up to 1e5 (their outgoing weights by the
    inverse): ReLU keeps the float function exactly, but no 8-bit activation scale covers it."""
    from pipeline.config import StudentConfig
    from pipeline.student.distill import train_student
    from pipeline.training.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "runs" / "mlp-hostile"
    train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=run, student="mlp", epochs=3,
                                batch_size=16), progress=False)
    model, ckpt = load_checkpoint(run / "model.pt", "student", "student")
    first, last = model[2], model[4]
    with torch.no_grad():
        scale = torch.logspace(0, 5, first.out_features)
        first.weight.mul_(scale[:, None]), first.bias.mul_(scale), last.weight.div_(scale[None, :])
    save_checkpoint(run / "model.pt", kind="student", arch=ckpt["arch"], model=model,
                    model_kwargs=ckpt["model_kwargs"], config=ckpt["config"], metrics=ckpt["metrics"])
    return run


def test_an_int8_model_over_budget_is_refused_or_left_out_and_reported(int8_hostile_run):
    from pipeline.results.report import render_exports

    with pytest.raises(UsageError, match=r"the int8 model loses [0-9.]+ pp of test accuracy \(budget 0.5 pp\)"):
        export_run(ExportConfig(run_dir=int8_hostile_run), progress=False)
    assert not (int8_hostile_run / "export").exists()          # strict: nothing written

    r = export_run(ExportConfig(run_dir=int8_hostile_run, skip_refused=True), progress=False)
    out = int8_hostile_run / "export"
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx", "model.pt2"]
    refused = json.loads((out / "export.json").read_text())["refused"]["int8"]
    assert refused == r["refused"]["int8"] and refused["acc_change_pp"] < -0.5 and refused["budget_pp"] == 0.5
    assert r["int8_choice"]["chosen"] in {t["method"] for t in r["int8_choice"]["tried"]}
    table = render_exports(int8_hostile_run.parent, [int8_hostile_run.name])
    assert f"int8 refused: {refused['acc_change_pp']:+.2f} pp" in table

    proc = subprocess.run([sys.executable, "-m", "stages.cli", "export", "--run-dir", str(int8_hostile_run),
                           "--skip-refused"], capture_output=True, text=True)
    assert proc.returncode == 0 and "int8 refused:" in proc.stdout, proc.stderr
