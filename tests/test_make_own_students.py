"""A student from outside softcache goes end to end through Make, as the built-in ones do: a timm MobileNetV3
on images and a transformers Llama-shaped preset on text, each cache -> student -> export -> report."""

from __future__ import annotations

import json

import pytest
import transformers

from tests.test_make import make
from tests.test_text_data import write_docs

pytestmark = pytest.mark.slow


def test_a_timm_student_through_make(tmp_path):
    common = ["LIMIT=500", "TEACHER_EPOCHS=1", "EPOCHS=1", "DEVICE=cpu", f"DATA_DIR={tmp_path}",
              "STUDENT=timm:mobilenetv3_small_050", "THREADS=1", "FORMATS=onnx"]
    make("student", *common)
    run = tmp_path / "runs/timm_mobilenetv3_small_050-T4-a0.1-from-e1-s0-e1-on-fashion-mnist-n500"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["student"] == "timm:mobilenetv3_small_050" and metrics["params"] > 100_000
    make("export", *common)
    export = json.loads((run / "export/export.json").read_text())
    assert export["parity"]["onnx"]["max_abs_diff"] <= 1e-4
    report = make("report", *common).stdout
    assert "timm:mobilenetv3_small_050" in report or "timm_mobilenetv3_small_050" in report


def test_a_transformers_preset_student_through_make(tmp_path):
    docs = write_docs(tmp_path / "docs", n=80)
    common = [f"DATASET={docs}", "TOKENIZER=bytes", f"DATA_DIR={tmp_path / 'd'}", "TEACHER_STEPS=20", "CONTEXT=16",
              "DEVICE=cpu", "THREADS=1", "STUDENT=hf-llama-tiny", "STEPS=8", "T=2", "ALPHA=0.5", "FORMATS=onnx"]
    make("student", *common)
    run = tmp_path / "d/runs/hf-llama-tiny-T2-a0.5-from-st20-c16-s0-st8-on-docs-bytes"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["hf_folder"]["reload_max_abs_diff"] <= 1e-5 and metrics["test_bits_per_byte"] > 0
    model = transformers.AutoModelForCausalLM.from_pretrained(run / "hf", local_files_only=True,
                                                         use_safetensors=True)
    assert model.config.model_type == "llama" and model.config.vocab_size == 256
    make("export", *common)
    assert json.loads((run / "export/export.json").read_text())["files"]["onnx"]["max_abs_diff"] <= 1e-4
    assert "hf-llama-tiny" in make("report", *common).stdout
