"""Edge export: a finished student run becomes files that need neither softcache nor torch.

Each exported file takes float32 images in [0, 1] shaped (N, C, H, W) and returns logits;
the normalisation is the model's first layer, so it travels inside the graph, and the
class names ride along as metadata. Nothing is handed over unchecked: on the whole test
set the ONNX and TorchScript logits must match eager PyTorch within ``parity_atol`` and
agree on every argmax, and the int8 model may lose at most ``int8_max_drop_pp`` points
of accuracy. All files are written into a temporary directory that replaces the export
directory only when every check has passed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.config import ExportConfig, as_record
from pipeline.data.prepare import Dataset, load_prepared
from pipeline.errors import UsageError
from pipeline.files import atomic_dir, write_json
from pipeline.provenance import code_version
from pipeline.results.latency import (
    eager_runner,
    median_latency_us,
    onnx_runner,
    pt2_runner,
    torchscript_runner,
)
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.loop import set_threads
from pipeline.training.run_dir import MODEL_FILE

__all__ = ["export_run", "EXPORT_FILES", "METADATA_KEY", "export_onnx", "quantize_int8", "export_pt2", "export_torchscript"]

EXPORT_FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt", "int8": "model.int8.onnx"}
METADATA_KEY = "softcache"   # ONNX metadata_props key and TorchScript extra file (softcache.json)
INPUT_NAME, OUTPUT_NAME = "images", "logits"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters narrate every step on stdout and warn about optional packages
    (torchvision) this project does not use; keep the stage's own output readable."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _attach_metadata(path: Path, metadata: dict) -> None:
    """Store the metadata in the ONNX file, validate the whole model, and save it in one piece."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in ((METADATA_KEY, json.dumps(metadata, sort_keys=True)),
                       ("class_names", json.dumps(metadata["class_names"]))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"softcache student '{metadata['student']}': {INPUT_NAME} float32 (N, C, H, W) in [0, 1] -> {OUTPUT_NAME}"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict) -> None:
    """torch.export-based ONNX export with a dynamic batch dimension, weights inside the file."""
    with _quiet():
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    _attach_metadata(path, metadata)


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict,
               dynamic_shapes: tuple | None = None) -> None:
    """A torch.export program (``torch.export.load(path).module()`` runs it): the PyTorch edge format softcache
    recommends, since torch deprecates TorchScript. Plain tensors only, so softcache's own teacher loader takes
    it back; the metadata is its extra file ``softcache.json``. ``dynamic_shapes``: the batch by default."""
    with _quiet():
        program = torch.export.export(model.eval(), (example,), strict=False,
                                      dynamic_shapes=dynamic_shapes or ({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(path), extra_files={f"{METADATA_KEY}.json": json.dumps(metadata, sort_keys=True)})


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict) -> None:
    """A traced module (these students have no data-dependent control flow) with the
    metadata as the extra file ``softcache.json``."""
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata, sort_keys=True)})


class _CalibrationBatches:
    """onnxruntime's CalibrationDataReader protocol over an array of images."""

    def __init__(self, images: np.ndarray, batch_size: int = 64):
        self._batches = iter([images[i:i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


# The int8 recipes tried, in order of preference (a tie keeps the earlier, simpler one):
# (name, calibration method, per-channel weight scales).
INT8_METHODS = (("minmax", "MinMax", False), ("minmax-per-channel", "MinMax", True),
                ("percentile-per-channel", "Percentile", True), ("entropy-per-channel", "Entropy", True))


@contextlib.contextmanager
def _pre_processed(onnx_path: Path) -> Iterator[Path]:
    """ONNX Runtime's pre-processing (shape inference, graph clean-up) of the float graph, done once
    for every int8 recipe quantised from it; the file is removed afterwards."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = onnx_path.with_name(onnx_path.stem + ".prepared.onnx")
    try:
        with _quiet():
            quant_pre_process(str(onnx_path), str(prepared))
        yield prepared
    finally:
        prepared.unlink(missing_ok=True)


def _quantize(prepared: Path, path: Path, calibration: np.ndarray, metadata: dict, method: str,
              per_channel: bool) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    with _quiet():
        quantize_static(str(prepared), str(path), _CalibrationBatches(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method))
    _attach_metadata(path, metadata)


def quantize_int8(onnx_path: Path, path: Path, calibration: np.ndarray, metadata: dict, *,
                  method: str = "MinMax", per_channel: bool = False) -> None:
    """Static int8 quantisation in QDQ form: weights int8, activations uint8, with ranges calibrated
    on training images by ONNX Runtime's ``method`` (MinMax, Percentile or Entropy)."""
    with _pre_processed(onnx_path) as prepared:
        _quantize(prepared, path, calibration, metadata, method, per_channel)


def _choose_int8(onnx_path: Path, path: Path, calibration: np.ndarray, held_x: np.ndarray, held_y: np.ndarray,
                 metadata: dict) -> dict:
    """Quantise with every recipe in INT8_METHODS and keep the one most accurate on held-out
    training rows (never the test set, which only measures the chosen file afterwards)."""
    tried = []
    with _pre_processed(onnx_path) as prepared:
        for name, method, per_channel in INT8_METHODS:
            candidate = path.with_name(f"{path.stem}.{name}.onnx")
            entry = {"method": name, "heldout_acc": None, "file": candidate}
            tried.append(entry)
            try:
                _quantize(prepared, candidate, calibration, metadata, method, per_channel)
            except Exception as exc:   # a calibrator can fail on a graph (ORT's Entropy does on some): the next
                entry["error"] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            entry["heldout_acc"] = float((_logits(onnx_runner(candidate, threads=1), held_x).argmax(1)
                                          == held_y).mean())
    best = max((t for t in tried if t["heldout_acc"] is not None), key=lambda t: t["heldout_acc"])  # first of equals
    best["file"].replace(path)
    for t in tried:
        t.pop("file").unlink(missing_ok=True)
    return {"chosen": best["method"], "heldout_rows": len(held_y), "tried": tried,
            "why": f"highest accuracy on {len(held_y)} held-out training rows ({100 * best['heldout_acc']:.2f}%)"}


def _logits(run, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    return np.concatenate([run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _unit_float(images: np.ndarray) -> np.ndarray:
    return np.asarray(images).astype(np.float32) / 255.0


def _load_dataset(cfg: ExportConfig, ckpt: dict) -> Dataset:
    path = cfg.dataset or ckpt["config"].get("dataset")
    if path is None:
        raise UsageError(f"{cfg.run_dir}: the run does not say which dataset it was trained on; pass --dataset")
    data = load_prepared(Path(path))
    expected = ckpt["metrics"].get("dataset_fingerprint")
    if expected and data.fingerprint != expected:
        raise UsageError(f"dataset {path} is not the one run {cfg.run_dir.name} was trained on "
                         f"(fingerprint {data.fingerprint} != {expected}); pass the run's dataset with --dataset")
    return data


def _metadata(cfg: ExportConfig, ckpt: dict, data: Dataset) -> dict:
    return {
        "format": "softcache-export-v1",
        "student": ckpt["arch"],
        "run": cfg.run_dir.name,
        "class_names": list(data.class_names),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["N", *data.image_shape], "range": [0.0, 1.0]},
        "output": {"name": OUTPUT_NAME, "shape": ["N", data.num_classes], "meaning": "logits; argmax is the class"},
        "test_acc": ckpt["metrics"].get("test_acc"),
        "model_fingerprint": ckpt["fingerprint"],
        "dataset_fingerprint": data.fingerprint,
    }


def _check_parity(name: str, logits: np.ndarray, reference: np.ndarray, atol: float) -> dict:
    max_abs = float(np.abs(logits - reference).max())
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
    if not max_abs <= atol or agreement < 1.0:
        raise UsageError(f"the {name} export does not compute what the trained student computes "
                         f"(max |logit difference| {max_abs:.2e}, tolerance {atol:g}; argmax agreement "
                         f"{100 * agreement:.2f}%); nothing was written")
    return {"max_abs_diff": max_abs, "argmax_agreement": agreement}


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def export_run(cfg: ExportConfig, progress: bool = True) -> dict:
    """Export, check and time one student run; returns what it writes to export.json."""
    set_threads(cfg.threads)
    if not (cfg.run_dir / MODEL_FILE).is_file():
        raise UsageError(f"{cfg.run_dir} holds no finished student run; train it first", fix="student")
    model, ckpt = load_checkpoint(cfg.run_dir / MODEL_FILE, "student", fix="student")
    data = _load_dataset(cfg, ckpt)
    metadata = _metadata(cfg, ckpt, data)
    example = torch.from_numpy(_unit_float(data.x_test[:2]))
    x_test = _unit_float(data.x_test)
    y_test = data.y_test
    eager = eager_runner(model)
    reference = _logits(eager, x_test)
    # Calibration rows and the held-out rows the int8 recipe is chosen on: disjoint training rows.
    order = np.random.default_rng(0).permutation(len(data.x_train))
    calibration = _unit_float(data.x_train[np.sort(order[:cfg.calibration_rows])])
    held = np.sort(order[cfg.calibration_rows:cfg.calibration_rows + cfg.int8_choice_rows])
    if len(held) == 0:      # a dataset smaller than the calibration set: choose on those rows
        held = np.sort(order[:cfg.int8_choice_rows])
    held_x, held_y = _unit_float(data.x_train[held]), data.y_train[held]

    report: dict = {"metadata": metadata, "files": {}, "parity": {}, "versions": _versions(),
                    "test_acc": {"eager": float((reference.argmax(1) == y_test).mean())},
                    "latency_us_batch1_1thread": {}, "config": as_record(cfg)}
    runners = {"eager": eager}
    try:
        with atomic_dir(cfg.destination) as tmp:
            for fmt in tqdm(cfg.formats, desc=f"export {cfg.run_dir.name}", unit="format", file=sys.stderr,
                            disable=not progress, leave=False):
                path = tmp / EXPORT_FILES[fmt]
                if fmt == "onnx":
                    export_onnx(model, example, path, metadata)
                elif fmt == "pt2":
                    export_pt2(model, example, path, metadata)
                elif fmt == "torchscript":
                    export_torchscript(model, example, path, metadata)
                else:
                    report["int8_choice"] = _choose_int8(tmp / EXPORT_FILES["onnx"], path, calibration, held_x,
                                                         held_y, metadata)
                runners[fmt] = (torchscript_runner(path) if fmt == "torchscript" else pt2_runner(path) if fmt == "pt2"
                                else onnx_runner(path, threads=1))
                logits = _logits(runners[fmt], x_test)
                report["test_acc"][fmt] = float((logits.argmax(1) == y_test).mean())
                report["files"][fmt] = {"path": EXPORT_FILES[fmt], "bytes": path.stat().st_size}
                if fmt != "int8":
                    report["parity"][fmt] = _check_parity(fmt, logits, reference, cfg.parity_atol)
            if "int8" in cfg.formats:
                drop_pp = 100 * (report["test_acc"]["eager"] - report["test_acc"]["int8"])
                report["int8_acc_change_pp"] = -drop_pp
                report["int8_size_ratio"] = report["files"]["int8"]["bytes"] / report["files"]["onnx"]["bytes"]
                if drop_pp > cfg.int8_max_drop_pp and not cfg.skip_refused:
                    raise UsageError(f"the int8 model loses {drop_pp:.2f} pp of test accuracy (budget "
                                     f"{cfg.int8_max_drop_pp:g} pp); nothing was written; export without it: "
                                     f"--formats onnx,pt2")
                if drop_pp > cfg.int8_max_drop_pp:     # left out, and the report says why
                    (tmp / EXPORT_FILES["int8"]).unlink()
                    report["refused"] = {"int8": {"acc_change_pp": -drop_pp, "budget_pp": cfg.int8_max_drop_pp}}
                    for part in ("files", "test_acc"):
                        report[part].pop("int8")
                    runners.pop("int8")
            report["latency_us_batch1_1thread"] = _batch1_latency(runners, x_test[:1])
            report.update(code_version())
            write_json(tmp / "export.json", report)
    except OSError as exc:
        raise UsageError(f"cannot write the export to {cfg.destination}: {exc.strerror or exc}; "
                         f"choose a writable --out-dir") from None
    return report


def _batch1_latency(runners: dict, x: np.ndarray) -> dict:
    """Single-thread, batch-1 latency of every form, side by side: the edge-like case."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: median_latency_us(run, x, seconds=0.3) for name, run in runners.items()}
    finally:
        torch.set_num_threads(threads)
