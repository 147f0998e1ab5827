"""A language-model student at the edge: ONNX with its parity against eager, a dynamically quantised int8
variant against its bits-per-byte budget, greedy generation speed on one CPU thread, and what it writes.

The image exporter (:mod:`pipeline.results.export`) checks accuracy on images; a language model is checked
on the prepared text's test windows instead: max |logit difference| for ONNX (floor 1e-4), and the change in
bits per byte for int8 (dynamic quantisation of the linear layers' weights: no calibration data). An int8
model over its budget is reported in ``export.json`` and left out; it never fails the export.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.windows import TokenWindows, text_tokenizer
from pipeline.errors import UsageError
from pipeline.files import atomic_path, read_json, write_json
from pipeline.results.export import _quiet, _versions, export_pt2, export_torchscript
from pipeline.results.latency import pt2_runner, torchscript_runner
from pipeline.training.checkpoint import load_checkpoint, recorded_tokenizer
from pipeline.training.loop import set_threads
from pipeline.training.run_dir import MODEL_FILE

__all__ = ["export_lm_run", "generate", "is_lm_run", "LM_EXPORT_FILES"]

LM_EXPORT_FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt", "int8": "model.int8.onnx"}
INPUT_NAME, OUTPUT_NAME = "ids", "logits"


def is_lm_run(run_dir: Path) -> bool:
    """Whether a finished run is a language-model student's (its metrics.json says so)."""
    metrics = Path(run_dir) / "metrics.json"
    return metrics.is_file() and read_json(metrics).get("kind") == "lm"


def _load(run_dir: Path):
    if not (run_dir / MODEL_FILE).is_file():
        raise UsageError(f"{run_dir} holds no finished LM student run; train it first", fix="lm-student")
    model, ckpt = load_checkpoint(run_dir / MODEL_FILE, "lm", "student")
    return model.eval(), ckpt


@torch.no_grad()
def check_model_tokenizer(model, ckpt: dict, tokenizer, text) -> None:
    """A model writes only through the tokenizer it learned: the one its checkpoint records, or where none is
    recorded, one exactly as wide as its output (another text's ids would be decoded as noise)."""
    recorded = recorded_tokenizer(ckpt)
    if recorded and recorded != tokenizer.fingerprint or tokenizer.vocab_size != model.vocab_size:
        raise UsageError(f"{text} is prepared with another tokenizer ({tokenizer.name}, {tokenizer.vocab_size} ids) "
                         f"than the model learned ({model.vocab_size} outputs); give the prepared text it learned "
                         f"from (the run's metrics.json names it)")


def prompt_ids(prompt: str, tokenizer) -> list[int]:
    """A prompt's ids; one that is no text (a lone surrogate from a command line that was not UTF-8) is refused."""
    try:
        data = prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"the prompt is not UTF-8 text (character {exc.start}); give it as UTF-8") from None
    if b"\0" in data and not tokenizer.definition:
        raise UsageError("the prompt holds a NUL byte, which ends a document in the byte tokenizer; leave it out")
    return tokenizer.encode(data).tolist()


def generate(model, prompt: list[int], tokens: int) -> list[int]:
    """Greedy continuation of ``prompt`` by ``tokens`` ids (the window slides once it is full)."""
    ids = list(prompt) or [0]
    for _ in range(tokens):
        window = torch.tensor([ids[-model.context:]], dtype=torch.int64)
        ids.append(int(model(window)[0, -1].argmax()))
    return ids[len(prompt) or 1:]


def _bits_per_byte(logits: np.ndarray, targets: np.ndarray, lengths: np.ndarray) -> float:
    nats = F.cross_entropy(torch.from_numpy(logits).reshape(-1, logits.shape[-1]),
                           torch.from_numpy(targets).reshape(-1), reduction="sum")
    return float(nats) / math.log(2) / float(lengths[targets].sum())


def export_lm_run(run_dir: Path, text: Path, out_dir: Path | None = None, *, windows: int = 64,
                  parity_atol: float = 1e-4, int8_budget_bpb: float = 0.05, generate_tokens: int = 160,
                  threads: int = 1, formats: tuple[str, ...] = ("onnx", "int8")) -> dict:
    """Export, check and time one LM student run in ``formats`` (onnx, torchscript, int8: quantised from the
    ONNX graph); returns what it writes to ``<out_dir>/export.json``."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    set_threads(threads)
    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir / "export")
    model, ckpt = _load(run_dir)
    test = TokenWindows(text, "test", model.context)
    if len(test) == 0:
        raise UsageError(f"{text} holds no test window of {model.context + 1} tokens to check the export on")
    picks = np.linspace(0, len(test) - 1, min(windows, len(test))).round().astype(np.int64)
    batch = test.batch(picks.tolist())
    x, targets = batch[:, :-1].contiguous(), batch[:, 1:].numpy()
    tokenizer = text_tokenizer(text)
    lengths = tokenizer.byte_lengths()
    with torch.no_grad():
        eager = model(x).numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"run": run_dir.name, "student": ckpt["arch"], "windows": len(picks), "context": model.context,
              "files": {}, "refused": {}, "versions": _versions(),
              "eager_bits_per_byte": _bits_per_byte(eager, targets, lengths)}
    metadata = {"kind": "lm", "context": model.context, "vocab_size": model.vocab_size}
    for fmt in ("pt2", "torchscript"):
        if fmt in formats:
            record["files"][fmt] = _torch_file(fmt, model, x, eager, out_dir / LM_EXPORT_FILES[fmt], metadata,
                                               parity_atol)
    if "onnx" not in formats and "int8" not in formats:
        return _finish(model, test, picks, tokenizer, generate_tokens, record, out_dir)
    onnx_path = out_dir / LM_EXPORT_FILES["onnx"]
    length = torch.export.Dim("length", max=model.context)
    with _quiet(), atomic_path(onnx_path) as tmp:
        # the example has 2 windows: at 1, a transformers model's code lets the exporter fix the batch at 1
        torch.onnx.export(model, (x[:2],), str(tmp), dynamo=True, external_data=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch"), 1: length},))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    run = lambda path: ort.InferenceSession(str(path), options).run(None, {INPUT_NAME: x.numpy()})[0]  # noqa: E731
    onnx_logits = run(onnx_path)
    max_abs = float(np.abs(onnx_logits - eager).max())
    if not max_abs <= parity_atol:
        onnx_path.unlink()
        raise UsageError(f"the ONNX export does not compute what the trained student computes (max |logit "
                         f"difference| {max_abs:.2e}, tolerance {parity_atol:g}); nothing was kept")
    record["files"]["onnx"] = {"path": onnx_path.name, "bytes": onnx_path.stat().st_size, "max_abs_diff": max_abs}
    if "int8" in formats:
        int8_path = out_dir / LM_EXPORT_FILES["int8"]
        with _quiet(), atomic_path(int8_path) as tmp:
            quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8)
        change = _bits_per_byte(run(int8_path), targets, lengths) - record["eager_bits_per_byte"]
        if change <= int8_budget_bpb:
            record["files"]["int8"] = {"path": int8_path.name, "bytes": int8_path.stat().st_size,
                                       "bits_per_byte_change": change}
        else:
            int8_path.unlink()
            record["refused"]["int8"] = {"bits_per_byte_change": change, "budget": int8_budget_bpb}
    if "onnx" not in formats:       # made only to quantise from
        onnx_path.unlink()
        del record["files"]["onnx"]
    return _finish(model, test, picks, tokenizer, generate_tokens, record, out_dir)


def _torch_file(fmt: str, model, x: torch.Tensor, eager: np.ndarray, path: Path, metadata: dict,
                parity_atol: float) -> dict:
    """A torch.export program (batch and window length free, up to the context) or a traced TorchScript module,
    written by the image export's functions and kept only where it computes what the trained student computes
    on the test windows."""
    with atomic_path(path) as tmp:
        if fmt == "pt2":
            dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("length", max=model.context)},)
            export_pt2(model, x[:2], tmp, metadata, dims)
        else:
            export_torchscript(model, x[:1], tmp, metadata)
    runner = pt2_runner(path) if fmt == "pt2" else torchscript_runner(path)
    max_abs = float(np.abs(runner(x.numpy()) - eager).max())
    if not max_abs <= parity_atol:
        path.unlink()
        raise UsageError(f"the {fmt} export does not compute what the trained student computes (max |logit "
                         f"difference| {max_abs:.2e}, tolerance {parity_atol:g}); nothing was kept")
    return {"path": path.name, "bytes": path.stat().st_size, "max_abs_diff": max_abs}


def _finish(model, test, picks, tokenizer, generate_tokens: int, record: dict, out_dir: Path) -> dict:
    """The greedy sample and its speed, then the record."""
    prompt = test.batch([int(picks[0])])[0, :48].tolist()        # the start of a held-out test window
    start = time.perf_counter()
    continuation = generate(model, prompt, generate_tokens)
    record["greedy_tokens_per_second_1thread"] = generate_tokens / (time.perf_counter() - start)
    record["sample"] = {"prompt": tokenizer.decode(prompt), "continuation": tokenizer.decode(continuation)}
    write_json(out_dir / "export.json", record)
    return record
