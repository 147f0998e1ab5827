"""Every setting a user can give, in one table: its default, a one-line meaning and its check.

Make's `make help`, the CLI's help texts and the configs' defaults all read this table, so
they cannot drift apart; each single setting is checked here for Make, the CLI and the
Python API alike (``check``), with one wording. Standard library only, like
``pipeline.names``, which derives every name from these settings, and ``pipeline.make_plan``, Make's planner.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UsageError

__all__ = ["GRID_MAX", "T_RANGE", "BRANCH_STUDENTS", "Setting", "SETTINGS", "SETTING", "DEFAULTS", "TARGETS", "EXPORT_FORMATS", "check", "default", "number", "check_grid",
           "image_size", "capped_parallelism", "threads_per_run", "control_problem",
           "check_views_mixup", "check_augment_replay", "check_labels_alpha", "check_sweep_backend", "check_ensemble_storage",
           "misspelled", "help_text"]


def _shown(text) -> str:
    return str(text) if str(text).strip() else repr(text)


def _number(low: float | None = None, high: float | None = None, *, above: float | None = None):
    def parse(name: str, text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise UsageError(f"{name} must be a number, got {_shown(text)}") from None
        if (not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high)
                or (above is not None and value <= above)):
            bounds = (f"in ({above:g}, {high:g}]" if above is not None and high is not None
                      else f"> {above:g}" if above is not None else f"in [{low:g}, {high:g}]" if high is not None
                      else f">= {low:g}")
            raise UsageError(f"{name} must be a number {bounds}, got {_shown(text)[:40]}")
        return value
    parse.kind = float    # what a command-line option converts the text to before this check
    return parse


# Every whole number has a ceiling where the arithmetic it feeds stays meaningful: seeds are drawn
# into numpy's and torch's 32-bit seed space, counts and sizes stay far below what 24 GiB could hold.
_SEED_MAX = 2**32 - 1
_COUNT_MAX = 10**9


def _integer(low: int = 0, high: int = _COUNT_MAX):
    def parse(name: str, text: str) -> int:
        try:
            value = int(str(text).strip()) if len(str(text)) <= 24 else None
        except (TypeError, ValueError):
            value = None
        if value is None or not low <= value <= high:
            raise UsageError(f"{name} must be a whole number in [{low}, {high}], got {_shown(text)[:40]}")
        return value
    parse.kind = int
    return parse


def _choice(*options: str):
    def parse(name: str, text: str) -> str:
        if text not in options:
            raise UsageError(f"{name} must be one of {', '.join(options)}, got {_shown(text)}")
        return text
    parse.choices = options
    return parse


def _labels(name: str, text: str):
    """'all' (every training row keeps its label) or a count N >= 0 of labelled rows."""
    if str(text).strip() == "all":
        return "all"
    return _integer(0)(name, text)


def _combine(name: str, text: str) -> str:
    if text in ("logits", "probs") or text.isdigit():
        return text
    raise UsageError(f"{name} must be logits, probs or a member number, got {text!r}")


# Settings are data: each free-text value has an alphabet in which neither Make nor a shell reads
# anything but the value itself (no quote, '$', ';', backquote, space or backslash), so a value can
# never become code, and every recipe quotes it as well.
_PATH_CHARS = "._/+@~,=-"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")                     # registry names
_RUN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,254}")              # one directory under DATA_DIR/runs
_FACTORY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*")
_SCHEDULER_RE = re.compile(r"[a-z]+://[A-Za-z0-9_.-]+:[0-9]{1,5}")
_WORDS_RE = re.compile(r"[A-Za-z0-9 ._,()+/:@-]*")
_SPEC_RE = re.compile(r"[A-Za-z0-9_.=<>!~,+-]+")
EXPORT_FORMATS = ("onnx", "pt2", "torchscript", "int8")


def control_problem(name: str, text: str) -> str | None:
    """A line break or other control character in a value: Make would read the rest as Makefile text."""
    if any(ord(c) < 32 or ord(c) == 127 for c in str(text)):
        return f"{name} holds a line break or control character; give every setting on one line"
    return None


def _path(name: str, text: str) -> str:
    """A file or directory name in the path alphabet (letters, digits and {_PATH_CHARS})."""
    if len(text) > 255 or not all(c.isalnum() or c in _PATH_CHARS for c in text):
        raise UsageError(f"{name} must be a path of at most 255 letters, digits and {_PATH_CHARS} (no spaces, "
                         f"quotes or shell characters), got {text[:60]!r}; rename or link the file")
    if text.startswith("~"):
        # Make expands a leading '~' in a target's name, a quoted shell word and Python do not: the two would
        # name different files. Say the full path instead of guessing which was meant.
        raise UsageError(f"{name} begins with '~', which Make and the stages would read as different places; "
                         f"give the full path, e.g. {name}={os.path.expanduser(text)}")
    return text


def _existing_path(name: str, text: str) -> str:
    if text and not Path(_path(name, text)).exists():
        raise UsageError(f"{name}={text} does not exist; give a file or directory that does, or leave {name} unset")
    return text


def _data_dir(name: str, text: str) -> str:
    if not text.strip() or os.path.realpath(_path(name, text)) == "/":
        raise UsageError(f"{name} must name a directory for softcache's artifacts, not {text!r}; give e.g. "
                         f"{name}=data")
    return text


def _pattern(regex: re.Pattern, what: str, example: str):
    def parse(name: str, text: str) -> str:
        if not regex.fullmatch(text):
            raise UsageError(f"{name} must be {what} (e.g. {example}), got {text[:60]!r}")
        return text
    return parse


def _optional(parse):
    return lambda name, text: text if text == "" else parse(name, text)


_TIMM_RE = re.compile(r"timm:[a-z0-9][a-z0-9_.]{0,127}")


def _student(name: str, text: str) -> str:
    """A registry name, timm:<architecture>, hf:<folder or config.json> or module:factory (the user's code)."""
    if _NAME_RE.fullmatch(text) or _TIMM_RE.fullmatch(text):
        return text
    if text.startswith("hf:"):
        if not Path(_path(name, text[3:])).exists():
            raise UsageError(f"{name}={text}: {text[3:]} does not exist; give a local Hugging Face model folder or its "
                             f"config.json (softcache never downloads one)")
        return text
    if _FACTORY_RE.fullmatch(text):
        return text
    raise UsageError(f"{name} must be a student's name (cnn-tiny, lm-small, hf-llama-small, ...), timm:<name>, "
                     f"hf:<folder or config.json> or module:factory, got {text[:60]!r}")


def _students(name: str, text: str) -> str:
    """A list of students (as :func:`_student`), separated by spaces or commas ('' for the grid's default)."""
    for part in text.replace(",", " ").split():
        _student(name, part)
    return text


def _teacher(name: str, text: str) -> str:
    """auto, published, an architecture name, a model file, or module:factory (the user's code)."""
    if _NAME_RE.fullmatch(text) or _FACTORY_RE.fullmatch(text):
        return text
    if "/" in text or "." in text:
        return _path(name, text)
    raise UsageError(f"{name} must be auto, published, an architecture name, a model file or module:factory, "
                     f"got {text[:60]!r}")


# A byte-level BPE holds the 256 bytes and an end-of-text token at least; past 2^20 tokens the trainer's
# merges would need more memory than a corpus of this size justifies (pipeline.data.tokenizers.train_bpe).
BPE_TOKENS = (257, 1 << 20)


def _tokenizer(name: str, text: str) -> str:
    """bytes, bpe-N (a BPE of N tokens trained here) or a local tokenizer.json."""
    low, high = BPE_TOKENS
    if text == "bytes" or (re.fullmatch(r"bpe-[0-9]{3,7}", text) and low <= int(text[4:]) <= high):
        return text
    if text.endswith(".json"):
        return _existing_path(name, text)
    raise UsageError(f"{name} must be bytes, bpe-N ({low} <= N <= {high}) or a local tokenizer.json, got {text[:60]!r}")


# A grid is stored per position (4 bytes each) and spelled in cache names: a few temperatures, not hundreds.
GRID_MAX = 16


def _temperature_grid(name: str, text: str) -> str:
    """Temperatures, separated by spaces or commas, each in the T range, none twice, at most GRID_MAX, each
    spelled in at most 8 characters (the grid is part of the cache's file name)."""
    parts = text.replace(",", " ").split()
    values = [_number(*T_RANGE)(name, v) for v in parts[:GRID_MAX + 1]]
    if not values or len(set(values)) != len(values) or len(parts) > GRID_MAX or any(len(p) > 8 for p in parts):
        raise UsageError(f"{name} must list 1 to {GRID_MAX} different temperatures of at most 8 characters each, "
                         f"got {text[:60]!r}")
    return text


def _formats(name: str, text: str) -> str:
    """A comma-separated subset of the export formats: the one check, for Make, the CLI and ExportConfig."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in EXPORT_FORMATS]
    if not parts or unknown:
        raise UsageError(f"unknown export format {', '.join(map(repr, unknown)) or '(none given)'} in {name}; "
                         f"choose from: {', '.join(EXPORT_FORMATS)}")
    return text


def _text(name: str, text: str) -> str:
    return text


def image_size(text: str) -> tuple[int, int] | None:
    """IMAGE_SIZE as (H, W): '' (each image's own size, which must then agree), 'S' or 'HxW'."""
    text = str(text).strip().lower()
    if not text:
        return None
    try:
        dims = tuple(int(p) for p in text.split("x"))
    except ValueError:
        dims = ()
    # Below 8 pixels a CNN's pooling leaves nothing; above 4096 one image alone takes 50 MB as floats.
    if len(dims) not in (1, 2) or min(dims) < 8 or max(dims) > 4096:
        raise UsageError(f"IMAGE_SIZE must be S or HxW in pixels, each from 8 to 4096 (28, 64x48), got {text[:40]!r}")
    return dims[0], dims[-1]


def _image_size(name: str, text: str) -> str:
    image_size(text)
    return text


def _fraction(name: str, text: str) -> float:
    value = _number(0, 1)(name, text)
    if value in (0, 1):
        raise UsageError(f"{name} must lie strictly between 0 and 1, got {_shown(text)}")
    return value


@dataclass(frozen=True)
class Setting:
    """One Make variable: its default as Make spells it, a one-line meaning, and its parser."""

    name: str
    default: str
    help: str
    parse: object = _text
    group: str = "student"


_S = Setting
# A temperature divides logits: below 0.01 or above 100, z/T overflows float32 or flattens every
# distribution to uniform, and the T² factor of the loss stops meaning anything.
T_RANGE = (0.01, 100)
# The students METHOD=byot can branch (two or more stages); pipeline.student.byot.branch_students() finds them by
# building each, which Make's plan (standard library only) cannot: a test keeps the two the same.
BRANCH_STUDENTS = ("cnn-small", "cnn-tiny")
LABEL_GRID = "600 1200 6000 all"   # experiment-labels' label counts when LABELS is not given
SETTINGS: tuple[Setting, ...] = (
    # the student stage
    _S("STUDENT", "cnn-tiny", "student: mlp, cnn-tiny, cnn-small, timm:<name>, module:factory; for text lm-small, "
       "hf-llama-small, hf:<config> ...", _student),
    _S("T", "4", "distillation temperature of the student's loss", _number(*T_RANGE)),
    # 0.1: the best ALPHA at T=4 on 5,000 held-out training rows with the default CPU teacher
    # (docs/RESULTS.md, "Choosing the default ALPHA"); the larger, the worse, 0.9 the worst.
    _S("ALPHA", "0.1", "weight of the soft-target term; the hard labels get 1-ALPHA (0: scratch)", _number(0, 1)),
    _S("SEED", "0", "student seed (initialisation, batch order, augmentation)", _integer(0, _SEED_MAX)),
    _S("EPOCHS", "5", "student epochs (also self-distillation and experiment runs)", _integer(1, 100_000)),
    _S("AUGMENT", "0", "1: random crop+flip against the clean image's logits", _choice("0", "1")),
    _S("REPLAY", "0", "train on K cached views (VIEWS=K), each with its own logits (0: off)", _integer(0)),
    _S("HOLDOUT", "0", "leave N fixed training rows out and report val_acc on them", _integer(0)),
    _S("LABELS", "all", "hard labels on only N training rows (class-balanced, drawn from SEED); the rest get the "
       f"soft term only, and scratch sees only the N rows (experiment-labels: a list, default {LABEL_GRID})",
       _labels),
    _S("COMBINE", "logits", "an ensemble's targets: logits (mean), probs (mean probability) or a member number",
       _combine),
    _S("THREADS", "0", "torch threads per run (0: cores / JOBS; JOBS x THREADS is capped at the cores, with a note)",
       _integer(0, 1024)),
    _S("CHECKPOINT_EVERY", "1", "save a run's whole training state every N epochs, so a killed run resumes (0: never)",
       _integer(0)),
    _S("CHECKPOINT_MINUTES", "0", "also save it when this many minutes have passed since the last save (0: off)",
       _number(0, 10**6)),
    _S("LOG", "none", "tensorboard: also write every epoch's figures as TensorBoard events under DATA_DIR/tensorboard",
       _choice("none", "tensorboard")),
    _S("RUN", "", "run directory name under DATA_DIR/runs for export (default: the STUDENT/T/ALPHA/... run)",
       _optional(_pattern(_RUN_RE, "one run directory's name under DATA_DIR/runs", "mlp-T4-a0.5-s0-e5"))),
    # data
    _S("DATA_DIR", "data", "where every artifact goes", _data_dir, group="data"),
    _S("DATASET", "fashion-mnist", "'fashion-mnist', an .npz file, an image folder (train/<class>/*, test/<class>/*), "
       "a directory of IDX files, or text: 'stdlib' (this Python's standard library), a .jsonl, .parquet or "
       ".arrow", _path, group="data"),
    _S("SOURCE", "", "read the dataset from this file or directory first", _existing_path, group="data"),
    _S("LAYOUT", "auto", "image axes of an .npz: auto (refuses what is ambiguous), nchw or nhwc",
       _choice("auto", "nchw", "nhwc"), group="data"),
    _S("IMAGE_SIZE", "", "image folders: scale every image to cover S or HxW pixels and crop the center (default: "
       "the images' own size, which must agree)", _image_size, group="data"),
    _S("CHANNELS", "auto", "image folders: 1 (greyscale) or 3 (RGB); auto: 1 when every image is greyscale",
       _choice("auto", "1", "3"), group="data"),
    _S("BAD_IMAGES", "fail", "image folders: fail names the first unreadable file; skip leaves them out and counts "
       "them", _choice("fail", "skip"), group="data"),
    _S("TEST_FRACTION", "0.1", "image folders without test/: the fraction of training files held out as the test "
       "split", _fraction, group="data"),
    _S("SPLIT_SEED", "0", "image folders: draws the held-out test files and the training rows' stored order; text: "
       "draws each document's split (named -splitS unless 0)",
       _integer(0, _SEED_MAX), group="data"),
    _S("TRANSFER", "", "an .npz or a folder of unlabelled images: the teacher scores them after the train rows, "
       "and distilled students learn from them with the soft term only", _existing_path, group="data"),
    _S("TOKENIZER", "bytes", "text (DATASET=stdlib, a .jsonl, .parquet or .arrow, or a folder of text given with "
       "TOKENIZER): bytes, bpe-N (a BPE of N tokens trained here on the whole corpus's train split) or a local "
       "tokenizer.json",
       _tokenizer, group="data"),
    _S("STEPS", "1600", "text: a language-model student's optimiser steps (its schedule's length)", _integer(1),
       group="data"),
    _S("CONTEXT", "128", "text: tokens per window, for the teacher, its cache and the students", _integer(2, 1 << 20),
       group="data"),
    _S("LIMIT", "0", "keep only the first N training images, or for text training documents up to N bytes and "
       "validation and test documents up to N/10 each (0: all); named -nN, so it never replaces the full set",
       _integer(0), group="data"),
    # the teacher and its cache
    _S("TEACHER", "auto", "teacher: auto, an architecture (cnn, resnet18), a model file, module:factory (imports and "
       "runs your module), or published", _teacher, group="teacher"),
    _S("TEACHER_WEIGHTS", "", "state dict for a module:factory TEACHER", _existing_path, group="teacher"),
    _S("TEACHER_EPOCHS", "0", "teacher epochs (0: 30 on a GPU, 5 on the CPU)", _integer(0, 100_000), group="teacher"),
    _S("TEACHER_SEED", "0", "seed of the (first) teacher", _integer(0, _SEED_MAX - 1024), group="teacher"),
    _S("TEACHERS", "1", "N > 1: an ensemble of N teachers, seeds TEACHER_SEED ... TEACHER_SEED+N-1", _integer(1, 1024),
       group="teacher"),
    _S("TEACHER_STEPS", "8000", "text: optimiser steps of a language-model teacher trained here", _integer(1),
       group="teacher"),
    _S("CACHE_TS", "1 2 4", "the temperatures a top-k cache holds the exact tail at (per-token caches, and image caches "
       "with CACHE_TOPK); students read at these only",
       _temperature_grid, group="teacher"),
    _S("TEACHER_T", "1", "temperature the cached logits are divided by", _number(*T_RANGE), group="teacher"),
    _S("CACHE_DTYPE", "float32", "storage of the cached logits (text: float16 unless given)", _choice("float32", "float16"), group="teacher"),
    _S("CACHE_TOPK", "0", "store only the k largest logits per row plus the tail (0: all; text: 16 unless given)", _integer(0),
       group="teacher"),
    _S("VIEWS", "1", "also cache K augmented views of every training image (1: the clean image only)", _integer(1, 1024),
       group="teacher"),
    _S("VIEW_SEED", "0", "draws the cached views' crops and flips", _integer(0, _SEED_MAX), group="teacher"),
    _S("MIXUP", "0", "a > 0: every cached view is a mixup pair, lambda ~ Beta(a, a) (needs VIEWS)", _number(0, 1000),
       group="teacher"),
    _S("DEVICE", "auto", "where the teacher runs: auto, cpu or cuda", _choice("auto", "cpu", "cuda"),
       group="teacher"),
    _S("NPROC", "1", "shard the teacher pass over N torchrun processes", _integer(1, 1024), group="teacher"),
    # grids: sweeps and experiments
    _S("STUDENTS", "", "students of a sweep or experiment (default: STUDENT)", _students, group="grid"),
    _S("TS", "", "temperatures of a sweep or experiment (default: T)", group="grid"),
    _S("ALPHAS", "", "ALPHA values of a sweep or experiment (default: 0 and ALPHA)", group="grid"),
    _S("SEEDS", "", "seeds of a sweep or experiment (default: SEED)", group="grid"),
    _S("JOBS", "1", "runs at once in a sweep, an experiment or the demo (the text demo: 2 unless given; capped at "
       "the cores, with a note)",
       _integer(1, 1024), group="grid"),
    _S("SWEEP_BACKEND", "joblib", "joblib (this machine) or dask (a cluster)", _choice("joblib", "dask"),
       group="grid"),
    _S("SCHEDULER", "", "Dask scheduler address for SWEEP_BACKEND=dask (tcp://host:8786)",
       _optional(_pattern(_SCHEDULER_RE, "a scheduler address", "tcp://host:8786")), group="grid"),
    _S("EXPERIMENT_HOLDOUT", "5000", "training rows experiment-views tunes T and ALPHA on", _integer(1),
       group="grid"),
    _S("LENGTHS", "15 60 200", "schedule lengths (epochs) of experiment-patient", group="grid"),
    _S("BANKS", "", "experiment-patient: view-bank sizes K matched at the longest length, each fit measured on "
       "bank and fresh views (needs VIEWS above the largest)", group="grid"),
    _S("ALPHA_T", "0.8", "PS-KD: weight of the previous epoch's predictions at the last epoch", _number(0, 1, above=0),
       group="grid"),
    _S("METHOD", "pskd", "self-distill: pskd (the previous epoch teaches), byot (branches on the student's own "
       "stages teach and are dropped) or cskd (another image of the same class teaches)",
       _choice("pskd", "byot", "cskd"), group="grid"),
    _S("BYOT_ALPHA", "0.1", "METHOD=byot: weight of the deployed head's soft targets on each branch",
       _number(0, 1, above=0),
       group="grid"),
    _S("BYOT_BETA", "1e-06", "METHOD=byot: weight of each branch's feature hint (squared distance, summed)",
       _number(0, 1), group="grid"),
    _S("BYOT_T", "3", "METHOD=byot: temperature of the branches' soft targets", _number(*T_RANGE), group="grid"),
    _S("CSKD_LAMBDA", "1", "METHOD=cskd: weight of the same-class partner's soft targets", _number(0, 100, above=0),
       group="grid"),
    _S("CSKD_T", "4", "METHOD=cskd: temperature of the partner's soft targets", _number(*T_RANGE), group="grid"),
    # the demo, export and publishing
    _S("DEMO_STUDENTS", "mlp cnn-tiny cnn-small", "students the demo trains (scratch and distilled)", _students,
       group="demo"),
    _S("DEMO_LABELS", "1200", "images: the demo's few-label pair, cnn-tiny scratch and distilled (ALPHA=0.5) with hard "
       "labels on only N training rows, where the cache pays most ('' leaves it out)", _optional(_integer(0, 10 ** 9)),
       group="demo"),
    _S("DEMO_T", "1", "T of the demo's distilled runs when it uses the published teacher (images or text)", _number(*T_RANGE),
       group="demo"),
    _S("DEMO_ALPHA", "0.5", "ALPHA of the demo's distilled runs when it uses the published teacher", _number(0, 1),
       group="demo"),
    _S("DEMO_LIMIT", "1000000", "the text demo's LIMIT (training bytes; a tenth of it each for validation and test) "
       "unless LIMIT is given", _integer(0), group="demo"),
    _S("FORMATS", "onnx,pt2,int8", "export formats: onnx, pt2 (torch.export), int8 (ONNX), torchscript (deprecated by torch)", _formats, group="demo"),
    _S("REPUBLISH", "", "make publish: the name of the published cache or LM teacher it may replace (e.g. "
       "fashion-mnist); without it an existing one is kept",
       _optional(_pattern(_NAME_RE, "a published file's name", "fashion-mnist")),
       group="demo"),
    _S("PUBLISH_DEVICE", "", "where the published teacher ran, in words (make publish)",
       _pattern(_WORDS_RE, "words (letters, digits, spaces and ._,()+/:@-)", "one NVIDIA H100"), group="demo"),
    # the environment
    _S("PYTHON", "python3", "the Python that builds the virtual environment (run as a command: yours)", group="env"),
    _S("VENV", ".venv", "the virtual environment", _path, group="env"),
    _S("TORCH_SPEC", "torch==2.14.1", "the torch requirement installed first (timm's torchvision needs this torch's build)",
       _pattern(_SPEC_RE, "one pip requirement", "torch==2.14.1"), group="env"),
)
DEFAULTS: dict[str, str] = {s.name: s.default for s in SETTINGS}
SETTING: dict[str, Setting] = {s.name: s for s in SETTINGS}   # by name
_BY_NAME = SETTING
_GROUPS = {"student": "student", "data": "data", "teacher": "teacher and cache", "grid": "sweeps and experiments",
           "demo": "demo, export, publish", "env": "environment"}

TARGETS: tuple[tuple[str, str], ...] = (
    ("demo", "the whole pipeline on Fashion-MNIST, ending in a results table (DATASET=stdlib: on text)"),
    ("test", "the test suite"),
    ("data", "prepare the dataset (text with DATASET=stdlib, a .jsonl, or TOKENIZER=...)"),
    ("teacher", "train the teacher (or every ensemble member; a language model for text)"),
    ("teacher-logits", "run the teacher once and write the HDF5 cache (per token, for text)"),
    ("student", "train one student from the cache (an LM student for text)"),
    ("sweep", "a grid of students from one cache"),
    ("self-distill", "a student taught without a teacher: METHOD=pskd, byot or cskd"),
    ("experiment-views", "scratch vs clean-target KD vs replayed views, tuned on held-out rows"),
    ("experiment-pskd", "scratch vs teacher KD vs PS-KD"),
    ("experiment-selfkd", "scratch vs PS-KD vs BYOT vs CS-KD vs teacher KD, full and DEMO_LABELS labels, over SEEDS"),
    ("experiment-labels", "scratch on N labels vs distilled on N labels plus soft targets elsewhere"),
    ("experiment-patient", "scratch vs clean-target KD vs function matching at every schedule length"),
    ("experiment-lm", "text: scratch vs distilled LM students over SEEDS at equal STEPS, and the price of sparsity"),
    ("export", "ONNX, TorchScript and int8 files of a finished run (ONNX and int8 for an LM student)"),
    ("report", "tables and figures of every finished run"),
    ("readme-results", "maintainers: rewrite the results block of docs/RESULTS.md from data/runs"),
    ("publish", "a float16 published copy of the cache (text: of the LM teacher's weights)"),
    ("bench", "the benchmarks, into BENCHMARKS.md"),
    ("clean-students", "remove runs and reports, keep teacher and cache"),
    ("clean", "remove every artifact"),
)


def check(name: str, value) -> object:
    """A setting's value, parsed and checked as Make and the CLI check it (typed values pass through
    the same parser as their text), or a one-line UsageError naming the setting."""
    setting = _BY_NAME[name]
    if isinstance(value, bool):
        value = int(value)
    parsed = setting.parse(name, value if isinstance(value, str) else _spell(value))
    return type(value)(parsed) if isinstance(value, (int, float)) and not isinstance(parsed, str) else parsed


def check_grid(grid: str, values, setting: str | None = None, check_one=None) -> tuple:
    """A grid (TS, ALPHAS, SEEDS, ...) is non-empty and has no value twice, and every value passes
    ``setting``'s check (its message then names the grid) or ``check_one`` (its own message)."""
    if not values:
        raise UsageError(f"{grid} is empty; give at least one value")
    seen = []
    for value in values:
        try:
            parsed = check(setting, value) if setting else value
        except UsageError as exc:
            raise UsageError(f"{grid}: {exc}") from None
        if check_one is not None:
            check_one(value)
        if parsed in seen:
            raise UsageError(f"{grid} lists {value!r} twice; give each value once")
        seen.append(parsed)
    return tuple(values)


# Checks that span settings, called by Make's plan (pipeline.make_plan) and by the configs alike.

def check_views_mixup(views: int, mixup: float) -> None:
    if mixup and views < 2:
        raise UsageError("MIXUP needs cached views to mix: give VIEWS=K (K >= 2) with it")


def check_augment_replay(augment: bool, replay: int) -> None:
    if augment and replay:
        raise UsageError("AUGMENT=1 with REPLAY>0 would re-augment the replayed views and break the match with "
                         "their logits; replayed views are already augmented, so drop AUGMENT")


def check_labels_alpha(labels, alpha: float) -> None:
    """LABELS=0 leaves no hard label: a scratch run has nothing to learn, and ALPHA < 1 would weigh nothing."""
    if labels == 0 and alpha < 1:
        raise UsageError("LABELS=0 leaves no hard labels: train from the soft targets alone with ALPHA=1"
                         + (" (a scratch run, ALPHA=0, has nothing to learn)" if alpha == 0 else ""))


def check_sweep_backend(backend: str, scheduler: str | None) -> None:
    if backend == "dask" and not scheduler:
        raise UsageError("SWEEP_BACKEND=dask needs SCHEDULER=tcp://host:port (a running dask scheduler)")


def check_ensemble_storage(members: int, topk: int) -> None:
    if members > 1 and topk:
        raise UsageError(f"an ensemble cache stores every logit; use CACHE_TOPK=0 with TEACHERS={members}")


def capped_parallelism(jobs: int, threads: int, cores: int | None = None) -> tuple[int, int, str | None]:
    """JOBS runs side by side with THREADS torch threads each, capped so that JOBS x THREADS never exceeds
    the cores: oversubscribed, each run spends its time switching (THREADS=64 on 2 cores ran an epoch
    about 90x slower). THREADS=0 shares the cores out. Returns (jobs, threads per run, a one-line note
    when something was capped, else None)."""
    cores = cores or os.cpu_count() or 1
    run_jobs = min(jobs, cores)
    share = max(1, cores // run_jobs)
    run_threads = min(threads, share) if threads else share
    note = None
    if run_jobs != jobs or (threads and run_threads != threads):
        note = (f"note: JOBS={jobs} THREADS={threads} exceed this machine's {cores} cores; running JOBS={run_jobs} "
                f"THREADS={run_threads}")
    return run_jobs, run_threads, note


def default(name: str, kind=str):
    """The default of a setting as a typed value (``default('T', float) == 4.0``; a 0/1 switch read as
    ``bool`` is ``DEFAULTS[name] == '1'``)."""
    return DEFAULTS[name] == "1" if kind is bool else kind(DEFAULTS[name])


def _spell(value) -> str:
    return number(value) if isinstance(value, float) else str(value)


def number(value) -> str:
    """The one spelling of a number in names: the shortest that reads back the same float,
    without a trailing '.0' (4, 4.0 and 4.00 are all '4'; 0.90 is '0.9')."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


_SYNONYMS = {"TEMP": "T", "TEMPERATURE": "T", "TAU": "T", "LAMBDA": "ALPHA", "WEIGHT": "ALPHA", "EPOCH": "EPOCHS",
             "MODEL": "STUDENT", "ARCH": "STUDENT", "DATA": "DATASET", "WORKERS": "JOBS", "N": "LIMIT"}


def misspelled(given: list[str]) -> list[str]:
    """Warnings for command-line variables that are no setting, naming the closest one."""
    out = []
    for name in given:
        if name in DEFAULTS or not name.isupper() or name.startswith("MAKE"):
            continue
        close = [_SYNONYMS[name]] if name in _SYNONYMS else difflib.get_close_matches(name, list(DEFAULTS), n=1,
                                                                                        cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; 'make help' lists them all"
        out.append(f"make: warning: {name} is not a softcache setting, so it changes nothing{hint}")
    return out


def help_text() -> str:
    """`make help`: every target and every setting with its default and meaning, from the tables above."""
    width = max(len(s.name) for s in SETTINGS) + 2
    lines = ["usage: make <target> [VARIABLE=value ...]", "", "targets:"]
    lines += [f"  {name:<20}{meaning}" for name, meaning in TARGETS]
    for group, title in _GROUPS.items():
        lines += ["", f"settings: {title} (default in brackets)"]
        lines += [f"  {s.name:<{width}}{s.help} [{s.default or 'unset'}]" for s in SETTINGS if s.group == group]
    return "\n".join(lines) + "\n"


def threads_per_run(threads: int, jobs: int, cores: int | None = None) -> int:
    """torch threads for each of JOBS runs side by side: THREADS if given, else the cores shared out
    (at least 1), and never more than JOBS x THREADS <= cores (:func:`capped_parallelism`)."""
    return capped_parallelism(jobs, threads, cores)[1]
