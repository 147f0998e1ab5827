"""Students from anywhere: the timm zoo, the user's own module:factory, and transformers causal LMs (a config or
a named preset). Each trains from the cache, rebuilds from its checkpoint, exports with parity, and what
cannot be trained is one line before any training."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
import transformers  # the hf and timm extras are part of make venv: a missing one fails here, never skips

from pipeline.config import LMStudentConfig, StudentConfig
from pipeline.errors import UsageError
from pipeline.models import create_lm, create_student
from pipeline.models.hf_lm import PRESETS
from pipeline.names import run_name, student_tag
from pipeline.results.lm_export import export_lm_run
from pipeline.student.distill import train_student
from pipeline.student.lm_distill import HF_FOLDER, train_lm_student
from pipeline.training.checkpoint import load_checkpoint
from tests.test_lm_teacher import text_file  # noqa: F401  (the fixture)
from tests.test_token_dataset import token_cache  # noqa: F401  (the fixture)
from tests.test_token_pass import lm_teacher  # noqa: F401  (the fixture)

IMAGE = {"in_shape": (1, 12, 12), "num_classes": 3}


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's on sys.path: a good factory, one that raises, one that returns no module, and one
    whose output has the wrong width."""
    (tmp_path / "my_students.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def small(in_shape, num_classes):
            c, h, w = in_shape
            return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes))

        def raises(in_shape, num_classes):
            raise ValueError("no GPU, no model")

        def not_a_module(in_shape, num_classes):
            return "a string"

        def too_wide(in_shape, num_classes):
            c, h, w = in_shape
            return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes + 1))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_students"
    sys.modules.pop("my_students", None)


def _image_run(tmp_path, prepared, cache_file, student, epochs=2):
    out = tmp_path / "runs" / run_name(student, 4.0, 0.5, 0, epochs)
    train_student(StudentConfig(cache=cache_file, dataset=prepared, out_dir=out, student=student, epochs=epochs,
                                batch_size=16, T=4.0, alpha=0.5, threads=1), progress=False)
    return out


@pytest.mark.parametrize("student", ["timm:mobilenetv3_small_050", "my_students:small"])
def test_an_image_student_from_anywhere_trains_rebuilds_and_exports(tmp_path, prepared, cache_file, user_module,
                                                                   student):
    from pipeline.config import ExportConfig
    from pipeline.results.export import export_run

    run = _image_run(tmp_path, prepared, cache_file, student)
    assert run.name.startswith(student_tag(student)) and ":" not in run.name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["student"] == student and 0 <= metrics["test_acc"] <= 1 and metrics["params"] > 0
    model, ckpt = load_checkpoint(run / "model.pt", "student", "student")
    assert ckpt["arch"] == student
    x = torch.rand(5, *IMAGE["in_shape"])
    assert model(x).shape == (5, 3)
    r = export_run(ExportConfig(run_dir=run, formats=("onnx",), threads=1))
    assert r["parity"]["onnx"]["max_abs_diff"] <= 1e-4


def test_a_user_module_that_changed_is_refused_when_rebuilt(tmp_path, prepared, cache_file, user_module):
    run = _image_run(tmp_path, prepared, cache_file, "my_students:small", epochs=1)
    path = tmp_path / "my_students.py"
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(UsageError, match="module's source changed since this student was trained"):
        load_checkpoint(run / "model.pt", "student", "student")


@pytest.mark.parametrize("student, match", [
    ("timm:mobilenetv3_smal_050", r"no architecture 'mobilenetv3_smal_050'; the nearest are mobilenetv3_small_050"),
    ("timm:vit_tiny_patch16_224", r"cannot take images of 1x12x12; it takes IMAGE_SIZE=224"),
    ("my_students:raises", r"small\(|raises\(in_shape=\(1, 12, 12\), num_classes=3\) raised ValueError: no GPU"),
    ("my_students:not_a_module", r"the factory returned str, not a torch.nn.Module"),
    ("my_students:too_wide", r"returns \(2, 4\) for 2 images but the data has 3 classes"),
    ("my_students:missing", r"cannot import 'missing' from module 'my_students'"),
    ("lm-small", r"STUDENT=lm-small is a language-model student, but this image data needs an image student"),
    ("hf-llama-small", r"is a language-model student"),
])
def test_an_image_student_that_cannot_train_is_one_line(user_module, student, match):
    with pytest.raises(UsageError, match=match):
        create_student(student, **IMAGE)


def _lm_config(tmp_path, cache, text, student, name="run", **kw) -> LMStudentConfig:
    return LMStudentConfig(cache=cache, text=text, out_dir=tmp_path / name, student=student,
                           **{"T": 2.0, "alpha": 0.5, "steps": 8, "batch_size": 4, "eval_every": 4,
                              "eval_windows": 4, "threads": 1, **kw})


@pytest.mark.parametrize("student", ["hf-llama-tiny", "hf-gpt2-tiny"])
def test_a_transformers_student_leaves_a_folder_that_from_pretrained_loads(tmp_path, token_cache, text_file,  # noqa: F811
                                                                            student):
    m = train_lm_student(_lm_config(tmp_path, token_cache, text_file, student), progress=False)
    folder = tmp_path / "run" / HF_FOLDER
    assert m["hf_folder"]["reload_max_abs_diff"] <= 1e-5
    assert {"config.json", "model.safetensors", "generation_config.json"} <= {p.name for p in folder.iterdir()}
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()
    model, ckpt = load_checkpoint(tmp_path / "run" / "model.pt", "lm", "student")
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert (reloaded(input_ids=ids).logits - model(ids)).abs().max() <= 1e-5
    assert ckpt["model_kwargs"]["hf_config"]["model_type"] == PRESETS[student]["model_type"]
    r = export_lm_run(tmp_path / "run", text_file, windows=4, formats=("onnx",))
    assert r["files"]["onnx"]["max_abs_diff"] <= 1e-4


def test_a_killed_transformers_student_resumes_to_the_same_weights(tmp_path, token_cache, text_file,  # noqa: F811
                                                                    monkeypatch):
    from pipeline.training.lm_loop import LMTrainer

    train_lm_student(_lm_config(tmp_path, token_cache, text_file, "hf-llama-tiny", "whole"), progress=False)
    real, calls = LMTrainer.train_steps, []

    def dies(self, *args, **kw):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, *args, **kw)

    monkeypatch.setattr(LMTrainer, "train_steps", dies)
    with pytest.raises(KeyboardInterrupt):
        train_lm_student(_lm_config(tmp_path, token_cache, text_file, "hf-llama-tiny", "killed"), progress=False)
    monkeypatch.setattr(LMTrainer, "train_steps", real)
    assert train_lm_student(_lm_config(tmp_path, token_cache, text_file, "hf-llama-tiny", "killed"),
                            progress=False)["resumed_from_step"] == 4
    a, _ = load_checkpoint(tmp_path / "whole" / "model.pt", "lm", "student")
    b, _ = load_checkpoint(tmp_path / "killed" / "model.pt", "lm", "student")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _config_file(tmp_path, **config):
    folder = tmp_path / "my-lm"
    folder.mkdir(exist_ok=True)
    base = {"model_type": "llama", "vocab_size": 256, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64}
    (folder / "config.json").write_text(json.dumps({**base, **config}))
    return f"hf:{folder}"


@pytest.mark.parametrize("change, match", [
    ({}, None),
    ({"auto_map": {"AutoModelForCausalLM": "modeling.My"}}, r"auto_map\), which softcache never runs"),
    ({"model_type": "no-such-arch"}, r"has no architecture 'no-such-arch'"),
    ({"model_type": "vit"}, r"'vit' is not a causal language model"),
    ({"vocab_size": 200}, r"vocab_size 200 is smaller than the cache's 256 tokens"),
    ({"max_position_embeddings": 8}, r"allows windows of 8 tokens but the cache's are 16"),
])
def test_a_transformers_config_is_checked_before_a_weight_is_made(tmp_path, change, match):
    spec = _config_file(tmp_path, **change)
    if match is None:
        model = create_lm(spec, vocab_size=256, context=16)
        assert model(torch.zeros(1, 16, dtype=torch.int64)).shape == (1, 16, 256)
        assert student_tag(spec).startswith("hf_my-lm_")
    else:
        with pytest.raises(UsageError, match=match):
            create_lm(spec, vocab_size=256, context=16)


@pytest.mark.parametrize("student, match", [
    ("cnn-tiny", r"STUDENT=cnn-tiny is an image student, but this text data needs a language-model student"),
    ("timm:resnet18", r"is an image student"),
    ("nothing-like-it", r"unknown student 'nothing-like-it'"),
])
def test_an_image_student_on_text_is_one_line(tmp_path, student, match):
    with pytest.raises(UsageError, match=match):
        LMStudentConfig(cache=tmp_path / "c.h5", text=tmp_path / "t.h5", out_dir=tmp_path / "r", student=student)
