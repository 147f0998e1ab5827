"""Every artifact's name, from the settings: datasets, teachers, caches and runs.

Python code (configs, sweeps, experiments, the student stage) and Make's planner
(:mod:`pipeline.make_plan`) name things with the same functions, so ``make student T=4.0`` and
``softcache sweep --Ts 4`` find the same run directory. Standard library only (and
``pipeline.errors`` and ``pipeline.settings``), so Make can use it before the virtual
environment exists.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.settings import (
    DEFAULTS,
    image_size,
    number,
)

__all__ = [
    "data_name", "is_image_folder", "folder_tag", "FOLDER_SETTINGS", "teacher_tag", "cache_tag", "transfer_name",
    "cache_file_name", "RunName", "run_name", "parse_run_name", "self_run_name", "parse_self_run_name", "SELF_METHOD_KNOBS", "SELF_METHOD_RECORD", "SELF_METHOD_LABEL",
    "run_data", "member_seeds", "TEACHER_CHECKPOINT", "TEACHER_RECORD", "STDLIB", "is_text_dataset",
    "tokenizer_tag", "text_data_name", "student_tag", "text_student_spelling", "image_student_spelling", "text_teacher_tag", "token_cache_suffix", "lm_run_name", "published_lm_teacher",
]


DEFAULT_DATA = Path(DEFAULTS["DATASET"]).name
TEACHER_CHECKPOINT = "teacher.pt"      # in DATA_DIR/teacher/<data>-<tag>/, beside its record
TEACHER_RECORD = "teacher.json"


# --- names ---------------------------------------------------------------------------------------------

def data_name(dataset: str, limit: int = 0, folder: str = "") -> str:
    """The prepared dataset's name: the dataset's file or directory name, then an image folder's
    :func:`folder_tag`, then -nN for LIMIT=N, so a quick run on a subset never replaces the full set
    (nor its teacher or cache)."""
    stem = Path(dataset.rstrip("/")).name
    stem = (stem[:-4] if stem.endswith(".npz") else stem) + folder
    return f"{stem}-n{limit}" if limit else stem


STDLIB = "stdlib"        # the default text corpus: this Python's own standard library sources


def is_text_dataset(dataset: str, tokenizer_given: bool = False) -> bool:
    """Whether DATASET names text: the stdlib corpus, a .jsonl, Parquet or Arrow file, or anything given with a
    TOKENIZER (a folder of text files says so by its TOKENIZER, since a folder may also hold images or IDX
    files)."""
    return tokenizer_given or dataset == STDLIB or str(dataset).endswith((".jsonl", ".parquet", ".arrow"))


def tokenizer_tag(tokenizer: str) -> str:
    """A tokenizer in a prepared text file's name: ``bytes``, ``bpe8192``, or ``tok_<folder>`` for a local
    tokenizer.json (the folder it sits in names it, as a Hugging Face model folder does)."""
    if tokenizer == "bytes" or re.fullmatch(r"bpe-\d+", tokenizer):
        return tokenizer.replace("-", "")
    path = Path(tokenizer)
    return "tok_" + (path.parent.name or path.stem).replace("-", "_").replace(".", "_")


def text_data_name(dataset: str, limit: int, tokenizer: str, split_seed: int) -> str:
    """A prepared text file's name: the corpus (-nN for LIMIT), its tokenizer, and -splitS where SPLIT_SEED
    is not 0, since another seed puts other documents in each split: a text that must never replace the
    default one, nor the teachers, caches and runs made from it."""
    return f"{data_name(dataset, limit)}-{tokenizer_tag(tokenizer)}" + (f"-split{split_seed}" if split_seed else "")


def published_lm_teacher(dataset: str, tokenizer: str) -> str:
    """Where the committed LM teacher for a corpus and tokenizer lives (its record beside it, .json): the
    whole corpus's name, since a LIMIT subset learns from the same teacher."""
    return f"published/{data_name(dataset)}-{tokenizer_tag(tokenizer)}-lm-teacher.pt"


def text_teacher_tag(teacher: str, steps: int, context: int, seed: int) -> str:
    """What tells one language-model teacher from another ('' for the default one): a file's or folder's
    name, or ``-<arch>-st<steps>-c<context>-s<seed>`` for what differs from the default."""
    if is_teacher_file(teacher) or teacher == "published":
        return teacher_tag(teacher)
    steps_tag = f"-st{steps}" if steps != int(DEFAULTS["TEACHER_STEPS"]) else ""
    return ((f"-{teacher}" if teacher != "auto" else "") + steps_tag
            + (f"-c{context}" if context != int(DEFAULTS["CONTEXT"]) else "") + (f"-s{seed}" if seed else ""))


def token_cache_suffix(*, context: int, topk: int, dtype: str, temperatures: list[float]) -> str:
    """A per-token cache's name after its teacher's: everything that changes its content."""
    grid = "_".join(number(t) for t in temperatures)
    return f"-c{context}-" + (f"k{topk}" if topk else "dense") + f"-{dtype}-ts{grid}.h5"


def is_image_folder(path: str | Path) -> bool:
    """A directory with a train/ subfolder of class folders (as opposed to a directory of IDX files)."""
    train = Path(path) / "train"
    return train.is_dir() and any(p.is_dir() for p in train.iterdir())


FOLDER_SETTINGS = ("IMAGE_SIZE", "CHANNELS", "BAD_IMAGES", "TEST_FRACTION", "SPLIT_SEED")


def folder_tag(s: dict[str, str]) -> str:
    """What an image folder's prepared name adds for each setting that is not the default, since
    each changes the rows: ``-64x48`` IMAGE_SIZE, ``-c3`` CHANNELS, ``-skipbad``, ``-tf0.2``
    TEST_FRACTION, ``-ss1`` SPLIT_SEED."""
    size = image_size(s["IMAGE_SIZE"])
    return ((f"-{size[0]}x{size[1]}" if size else "") + (f"-c{s['CHANNELS']}" if s["CHANNELS"] != "auto" else "")
            + ("-skipbad" if s["BAD_IMAGES"] == "skip" else "")
            + (f"-tf{number(s['TEST_FRACTION'])}" if float(s["TEST_FRACTION"]) != float(DEFAULTS["TEST_FRACTION"])
               else "") + (f"-ss{int(s['SPLIT_SEED'])}" if int(s["SPLIT_SEED"]) else ""))


def is_teacher_file(teacher: str) -> bool:
    """A model file (TorchScript, .pt2) or module:factory, as opposed to an architecture name."""
    return any(c in teacher for c in ":/.")


def teacher_tag(teacher: str = "auto", epochs: int = 0, seed: int = 0, members: int = 1) -> str:
    """What tells one teacher from another in directory, cache and run names ('' for the default one):
    ``-published``; a file's name (``-model_pt``); or ``-<arch>-e<epochs>-s<seed>`` for what differs
    from the default softcache teacher, plus ``-x<N>`` for an ensemble of N."""
    if teacher == "published":
        return "-published"
    if is_teacher_file(teacher):
        return "-" + Path(teacher).name.replace(".", "_").replace(":", "-")
    tag = (f"-{teacher}" if teacher != "auto" else "") + (f"-e{epochs}" if epochs else "") + (f"-s{seed}" if seed else "")
    return tag + (f"-x{members}" if members > 1 else "")


def cache_file_name(data: str, tag: str, *, temperature: float = 1.0, dtype: str = "float32", topk: int = 0,
                    views: int = 1, view_seed: int = 0, mixup: float = 0.0, transfer: str = "") -> str:
    """The cache of the teacher with ``tag`` on dataset ``data``: everything that changes its content."""
    return data + tag + cache_suffix(temperature=temperature, dtype=dtype, topk=topk, views=views,
                                     view_seed=view_seed, mixup=mixup, transfer=transfer)


def cache_suffix(*, temperature: float = 1.0, dtype: str = "float32", topk: int = 0, views: int = 1,
                 view_seed: int = 0, mixup: float = 0.0, transfer: str = "", grid: str = DEFAULTS["CACHE_TS"]) -> str:
    extra = f"-tr_{transfer_name(transfer)}" if transfer else ""
    return (f"-T{number(temperature)}-{dtype}" + (f"-top{topk}{_grid(grid)}" if topk else "")
            + _viewed(views, view_seed, mixup) + extra + ".h5")


def _grid(grid: str) -> str:
    """A top-k cache's temperature grid in names, when it is not the default (CACHE_TS)."""
    values = grid.replace(",", " ").split()
    return "" if values == DEFAULTS["CACHE_TS"].split() else "-ts" + "_".join(number(float(t)) for t in values)


def _viewed(views: int, view_seed: int, mixup: float) -> str:
    if views < 2:
        return ""
    return f"-v{views}" + (f"-vs{view_seed}" if view_seed else "") + (f"-mx{number(mixup)}" if mixup else "")


def cache_tag(*, temperature: float = 1.0, dtype: str = "float32", topk: int = 0, views: int = 1,
              view_seed: int = 0, mixup: float = 0.0, grid: str = DEFAULTS["CACHE_TS"]) -> str:
    """What a distilled run's name adds to its teacher's tag for a cache other than the default
    one: every setting of :func:`cache_suffix` but the transfer set (which runs name on their own),
    so two caches of one teacher never share a run (``-tt2`` TEACHER_T=2, ``-f16``, ``-top5``,
    ``-v8-vs1-mx1``). The default cache adds nothing, so its runs keep their names."""
    return ((f"-tt{number(temperature)}" if temperature != 1 else "") + ("-f16" if dtype == "float16" else "")
            + (f"-top{topk}{_grid(grid)}" if topk else "") + _viewed(views, view_seed, mixup))


def transfer_name(transfer: str | Path) -> str:
    """A transfer set's name in cache and run names: its file's stem, with '-' spelled '_'."""
    return Path(str(transfer)).stem.replace("-", "_") if str(transfer) else ""


def member_seeds(first_seed: int, members: int) -> list[int]:
    """The seeds of an ensemble's members (one seed for a single teacher)."""
    return list(range(first_seed, first_seed + members))


_NUM = r"[0-9.]+(?:e[+-]?[0-9]+)?"
_RUN_RE = re.compile(
    rf"^(?P<student>.+?)-(?:scratch|T(?P<T>{_NUM})-a(?P<alpha>{_NUM})(?:-from(?P<teacher>-.+?))?"
    rf"(?:-(?P<combine>probs|m[0-9]+))?)(?:-r(?P<replay>[0-9]+)|-(?P<augment>aug))?(?:-ho(?P<holdout>[0-9]+))?"
    rf"(?:-l(?P<labels>[0-9]+))?(?:-tr_(?P<transfer>[^-]+))?-s(?P<seed>[0-9]+)-e(?P<epochs>[0-9]+)(?:-on-(?P<data>.+))?$")
# A self-distillation run names its method and the method's own settings, in this order and spelling:
# (key in the name and the report, its letter in the name, the setting that holds it).
SELF_METHOD_KNOBS = {"pskd": (("alpha_T", "a", "ALPHA_T"),),
                     "byot": (("alpha", "a", "BYOT_ALPHA"), ("beta", "b", "BYOT_BETA"), ("T", "T", "BYOT_T")),
                     "cskd": (("lambda", "w", "CSKD_LAMBDA"), ("T", "T", "CSKD_T"))}
# Each self-distillation METHOD as metrics.json records it ("method"; PS-KD's id predates the others) and as
# tables name it.
SELF_METHOD_RECORD = {"pskd": "ps-kd", "byot": "byot", "cskd": "cs-kd"}
SELF_METHOD_LABEL = {"pskd": "PS-KD", "byot": "BYOT", "cskd": "CS-KD"}
_SELF_RE = re.compile(rf"^(?P<student>.+?)-(?P<method>pskd|byot|cskd)(?P<knobs>(?:-[abwT]{_NUM})+)"
                      rf"(?:-l(?P<labels>[0-9]+))?(?:-ho(?P<holdout>[0-9]+))?-s(?P<seed>[0-9]+)-e(?P<epochs>[0-9]+)"
                      rf"(?:-on-(?P<data>.+))?$")
_KNOB_RE = re.compile(rf"-([abwT])({_NUM})")


@dataclass(frozen=True)
class RunName:
    """What a student run's directory name says, and all it says. A scratch run (alpha 0) uses no
    teacher, so its T, teacher and combine are dropped: scratch runs are shared by every teacher."""

    student: str
    T: float | None
    alpha: float
    seed: int
    epochs: int
    replay: int = 0
    augment: bool = False
    holdout: int = 0
    teacher: str = ""          # the teacher's tag, '' for the default teacher
    combine: str = "logits"
    data: str = ""             # the prepared dataset's name, '' for the default (the full Fashion-MNIST)
    labels: int | None = None  # LABELS=N: hard labels on N training rows only; None: every row's
    transfer: str = ""         # the transfer set's name (TRANSFER's file stem), '' without one

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)   # noqa: E731 (frozen dataclass)
        set_("alpha", float(self.alpha))
        set_("student", student_tag(self.student))
        set_("transfer", transfer_name(self.transfer))
        if self.alpha == 0:    # scratch sees neither the teacher nor the unlabelled transfer rows
            set_("T", None), set_("teacher", ""), set_("combine", "logits"), set_("transfer", "")
        else:
            set_("T", float(self.T))
        if self.teacher and not self.teacher.startswith("-"):
            set_("teacher", f"-{self.teacher}")
        if self.replay:
            set_("augment", False)

    def __str__(self) -> str:
        if self.alpha == 0:
            arm = "scratch"
        else:
            combined = "" if self.combine == "logits" else "-probs" if self.combine == "probs" else f"-m{self.combine}"
            source = f"-from{self.teacher}" if self.teacher else ""
            arm = f"T{number(self.T)}-a{number(self.alpha)}{source}{combined}"
        inputs = f"-r{self.replay}" if self.replay else "-aug" if self.augment else ""
        held = f"-ho{self.holdout}" if self.holdout else ""
        held += ("" if self.labels is None else f"-l{self.labels}") + (f"-tr_{self.transfer}" if self.transfer else "")
        return f"{self.student}-{arm}{inputs}{held}-s{self.seed}-e{self.epochs}{_on(self.data)}"


def student_tag(student: str) -> str:
    """A student as a run directory's name spells it: a registered name as it is; ``timm:resnet18`` as
    ``timm_resnet18``; ``pkg.mod:make`` as ``pkg.mod_make``; ``hf:<folder or config.json>`` as ``hf_<folder>_``
    and 6 hex digits of the whole spelling (two folders of one name stay apart). Only letters, digits, ``.``,
    ``_`` and ``-`` remain, never first a ``.`` or ``-``: nothing a file system or the shell treats specially."""
    tag = student
    if student.startswith("hf:"):
        path = Path(student[3:].rstrip("/"))
        stem = path.parent.name if path.name == "config.json" else path.stem if path.suffix == ".json" else path.name
        tag = f"hf_{stem or 'config'}_{hashlib.sha256(student.encode()).hexdigest()[:6]}"
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", tag.replace(":", "_", 1) if ":" in tag else tag)
    return tag.lstrip(".-")[:80] or "student"


def text_student_spelling(student: str) -> bool:
    """Whether a STUDENT is spelled as a language model (lm-*, the hf-* presets, hf:<config>): what Make's plan
    checks against the data before the environment, and :mod:`pipeline.models` with it, exists."""
    return student.startswith(("lm-", "hf-", "hf:"))


def image_student_spelling(student: str) -> bool:
    """Whether a STUDENT is spelled as an image model: timm:<name>, or a name that is not a language model's
    (module:factory is either: its stage decides)."""
    return student.startswith("timm:") or (":" not in student and not text_student_spelling(student))


def _on(data: str) -> str:
    """Runs on another dataset than the default (or on a LIMIT subset) say so, so they never share a
    directory with the default dataset's runs."""
    return f"-on-{data}" if data and data != DEFAULT_DATA else ""


def run_data(prepared: str | Path) -> str:
    """The dataset part of a run's name, from the prepared dataset's file (``.../<data name>.npz|.h5``)."""
    stem = Path(prepared).stem
    return "" if stem == DEFAULT_DATA else stem


def run_name(student: str, T: float, alpha: float, seed: int, epochs: int, **inputs) -> str:
    """A student run's directory name: ``-r8`` replays 8 cached views, ``-aug`` augments at random,
    ``-ho5000`` holds 5000 rows out, ``-l1200`` keeps 1200 hard labels, ``-tr_<name>`` learns from a transfer
    set too; a distilled run names a non-default teacher (``-from-e30-x3``)
    and ensemble targets other than the mean of logits (``-probs``, ``-m1``)."""
    return str(RunName(student, T, alpha, seed, epochs, **inputs))


def parse_run_name(name: str) -> RunName:
    """The inverse of :func:`run_name`."""
    m = _RUN_RE.match(name)
    if m is None:
        raise UsageError(f"{name!r} is not a softcache student run name (e.g. cnn-tiny-T4-a0.5-s0-e5)")
    g = m.groupdict()
    combine = g["combine"] or "logits"
    return RunName(g["student"], float(g["T"]) if g["T"] else None, float(g["alpha"] or 0), int(g["seed"]),
                   int(g["epochs"]), replay=int(g["replay"] or 0), augment=bool(g["augment"]),
                   holdout=int(g["holdout"] or 0), teacher=g["teacher"] or "",
                   combine=combine[1:] if combine.startswith("m") else combine, data=g["data"] or "",
                   labels=None if g["labels"] is None else int(g["labels"]), transfer=g["transfer"] or "")


def lm_run_name(student: str, T: float, alpha: float, seed: int, steps: int, data: str, teacher: str = "",
                topk: int = 0, self_alpha_T: float = 0.0) -> str:
    """A language-model student run's directory name: as an image run's, counted in steps (``-st1600``), with
    ``-k4`` when it reads only the cache's top 4; scratch (ALPHA=0) names neither T nor the teacher, so every
    teacher's comparison shares it; PS-KD (its own earlier state teaches) is ``-pskd-a<ALPHA_T>``."""
    taught = (f"-T{number(T)}-a{number(alpha)}" + (f"-k{topk}" if topk else "")
              + (f"-from{teacher}" if teacher else "") if alpha else
              f"-pskd-a{number(self_alpha_T)}" if self_alpha_T else "-a0")
    return f"{student_tag(student)}{taught}-s{seed}-st{steps}{_on(data)}"


def self_run_name(student: str, method: str, knobs: dict[str, float], seed: int, epochs: int, data: str = "",
                  labels: int | None = None, holdout: int = 0) -> str:
    """A self-distillation run's directory name: ``cnn-tiny-pskd-a0.8-s0-e5``, ``cnn-small-byot-a0.1-b1e-06-T3-s0-e5``,
    ``cnn-tiny-cskd-w1-T4-l1200-s0-e100``; ``knobs`` are the method's settings (:data:`SELF_METHOD_KNOBS`)."""
    spelled = "".join(f"-{letter}{number(knobs[key])}" for key, letter, _ in SELF_METHOD_KNOBS[method])
    return (f"{student_tag(student)}-{method}{spelled}" + (f"-l{labels}" if labels is not None else "")
            + (f"-ho{holdout}" if holdout else "") + f"-s{seed}-e{epochs}{_on(data)}")


def parse_self_run_name(name: str) -> dict:
    """What :func:`self_run_name` put in ``name``: student, method, knobs, labels, holdout, seed, epochs, data."""
    m = _SELF_RE.match(name)
    spelled = dict(_KNOB_RE.findall(m.group("knobs"))) if m else {}
    if m is None or set(spelled) != {letter for _, letter, _ in SELF_METHOD_KNOBS[m.group("method")]}:
        raise UsageError(f"{name!r} is not a self-distillation run name (e.g. cnn-tiny-pskd-a0.8-s0-e5)")
    g = m.groupdict()
    return {"student": g["student"], "method": g["method"],
            "knobs": {key: float(spelled[letter]) for key, letter, _ in SELF_METHOD_KNOBS[g["method"]]},
            "labels": None if g["labels"] is None else int(g["labels"]), "holdout": int(g["holdout"] or 0),
            "seed": int(g["seed"]), "epochs": int(g["epochs"]), "data": g["data"] or ""}
