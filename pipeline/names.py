"""Every setting, every artifact's name and every policy that spans settings, in one place.

The Makefile asks this module and computes nothing itself: at the top of every ``make``
run it calls ``python3 -m pipeline.names make VAR=value ...`` with the variables given on
the command line. This module checks them (a bad value is one line and exit 2 before any
file is touched), resolves the defaults, and prints Make assignments: the settings, the
file and run names derived from them, and the parameter stamps that are out of date.
The Python side (configs, sweeps, experiments, the student stage) names its runs with
the same functions, so ``make student T=4.0`` and ``softcache sweep --Ts 4`` find the same
run directory.

It imports nothing outside the standard library (and ``pipeline.errors``), so Make can
run it with the system Python before the virtual environment exists. Why an entry point
rather than a fragment file rebuilt by a Make rule: a dry run (``make -n``) must change
nothing and print nothing but the recipes it would run, and a ``$(shell)`` call at parse
time is the one place Make runs a command that neither prints nor counts as a recipe.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import UsageError

__all__ = [
    "Setting", "SETTINGS", "DEFAULTS", "TARGETS", "check", "number", "data_name", "teacher_tag",
    "cache_file_name", "RunName", "run_name", "parse_run_name", "pskd_run_name", "parse_pskd_run_name",
    "run_data", "member_seeds", "threads_per_run", "Plan", "plan", "make_fragment", "help_text",
]


# --- the settings: one table for Make, the CLI's help texts and the configs' defaults ---------------

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
            bounds = (f"> {above:g}" if above is not None else f"in [{low:g}, {high:g}]" if high is not None
                      else f">= {low:g}")
            raise UsageError(f"{name} must be a number {bounds}, got {_shown(text)}")
        return value
    return parse


def _integer(low: int = 0):
    def parse(name: str, text: str) -> int:
        try:
            value = int(str(text).strip())
        except (TypeError, ValueError):
            value = None
        if value is None or value < low:
            raise UsageError(f"{name} must be a whole number >= {low}, got {_shown(text)}")
        return value
    return parse


def _choice(*options: str):
    def parse(name: str, text: str) -> str:
        if text not in options:
            raise UsageError(f"{name} must be one of {', '.join(options)}, got {_shown(text)}")
        return text
    return parse


def _combine(name: str, text: str) -> str:
    if text in ("logits", "probs") or text.isdigit():
        return text
    raise UsageError(f"{name} must be logits, probs or a member number, got {text!r}")


def _existing_path(name: str, text: str) -> str:
    if text and not Path(text).exists():
        raise UsageError(f"{name}={text} does not exist; give a file or directory that does, or leave {name} unset")
    return text


def _text(name: str, text: str) -> str:
    return text


@dataclass(frozen=True)
class Setting:
    """One Make variable: its default as Make spells it, a one-line meaning, and its parser."""

    name: str
    default: str
    help: str
    parse: object = _text
    group: str = "student"


_S = Setting
SETTINGS: tuple[Setting, ...] = (
    # the student stage
    _S("STUDENT", "cnn-tiny", "student architecture (mlp, cnn-tiny, cnn-small, ...)"),
    _S("T", "4", "distillation temperature of the student's loss", _number(above=0)),
    _S("ALPHA", "0.9", "weight of the soft-target term; the hard labels get 1-ALPHA (0: scratch)", _number(0, 1)),
    _S("SEED", "0", "student seed (initialisation, batch order, augmentation)", _integer(0)),
    _S("EPOCHS", "5", "student epochs (also self-distillation and experiment runs)", _integer(1)),
    _S("AUGMENT", "0", "1: random crop+flip against the clean image's logits", _choice("0", "1")),
    _S("REPLAY", "0", "train on K cached views (VIEWS=K), each with its own logits (0: off)", _integer(0)),
    _S("HOLDOUT", "0", "leave N fixed training rows out and report val_acc on them", _integer(0)),
    _S("COMBINE", "logits", "an ensemble's targets: logits (mean), probs (mean probability) or a member number",
       _combine),
    _S("THREADS", "0", "torch threads per run (0: cores / JOBS)", _integer(0)),
    _S("RUN", "", "run directory name under DATA_DIR/runs for export (default: the STUDENT/T/ALPHA/... run)"),
    # data
    _S("DATA_DIR", "data", "where every artifact goes", group="data"),
    _S("DATASET", "fashion-mnist", "'fashion-mnist', an .npz file, or a directory of IDX files", group="data"),
    _S("SOURCE", "", "read the dataset from this file or directory first", _existing_path, group="data"),
    _S("LIMIT", "0", "keep only the first N training images (0: all); named -nN, so it never replaces the full set",
       _integer(0), group="data"),
    # the teacher and its cache
    _S("TEACHER", "auto", "teacher: auto, an architecture (cnn, resnet18), a model file, module:factory, or published",
       group="teacher"),
    _S("TEACHER_WEIGHTS", "", "state dict for a module:factory TEACHER", _existing_path, group="teacher"),
    _S("TEACHER_EPOCHS", "0", "teacher epochs (0: 30 on a GPU, 5 on the CPU)", _integer(0), group="teacher"),
    _S("TEACHER_SEED", "0", "seed of the (first) teacher", _integer(0), group="teacher"),
    _S("TEACHERS", "1", "N > 1: an ensemble of N teachers, seeds TEACHER_SEED ... TEACHER_SEED+N-1", _integer(1),
       group="teacher"),
    _S("TEACHER_T", "1", "temperature the cached logits are divided by", _number(above=0), group="teacher"),
    _S("CACHE_DTYPE", "float32", "storage of the cached logits", _choice("float32", "float16"), group="teacher"),
    _S("CACHE_TOPK", "0", "store only the k largest logits per row plus the tail (0: all)", _integer(0),
       group="teacher"),
    _S("VIEWS", "1", "also cache K augmented views of every training image (1: the clean image only)", _integer(1),
       group="teacher"),
    _S("VIEW_SEED", "0", "draws the cached views' crops and flips", _integer(0), group="teacher"),
    _S("MIXUP", "0", "a > 0: every cached view is a mixup pair, lambda ~ Beta(a, a) (needs VIEWS)", _number(0),
       group="teacher"),
    _S("DEVICE", "auto", "where the teacher runs: auto, cpu or cuda", _choice("auto", "cpu", "cuda"),
       group="teacher"),
    _S("NPROC", "1", "shard the teacher pass over N torchrun processes", _integer(1), group="teacher"),
    # grids: sweeps and experiments
    _S("STUDENTS", "", "students of a sweep or experiment (default: STUDENT)", group="grid"),
    _S("TS", "", "temperatures of a sweep or experiment (default: T)", group="grid"),
    _S("ALPHAS", "", "ALPHA values of a sweep or experiment (default: 0 and ALPHA)", group="grid"),
    _S("SEEDS", "", "seeds of a sweep or experiment (default: SEED)", group="grid"),
    _S("JOBS", "1", "runs at once in a sweep, an experiment or the demo", _integer(1), group="grid"),
    _S("SWEEP_BACKEND", "joblib", "joblib (this machine) or dask (a cluster)", _choice("joblib", "dask"),
       group="grid"),
    _S("SCHEDULER", "", "Dask scheduler address for SWEEP_BACKEND=dask (tcp://host:8786)", group="grid"),
    _S("EXPERIMENT_HOLDOUT", "5000", "training rows experiment-views tunes T and ALPHA on", _integer(1),
       group="grid"),
    _S("ALPHA_T", "0.8", "PS-KD: weight of the previous epoch's predictions at the last epoch", _number(above=0),
       group="grid"),
    # the demo, export and publishing
    _S("DEMO_STUDENTS", "mlp cnn-tiny cnn-small", "students the demo trains (scratch and distilled)", group="demo"),
    _S("DEMO_T", "1", "T of the demo's distilled runs when it uses the published teacher", _number(above=0),
       group="demo"),
    _S("DEMO_ALPHA", "0.5", "ALPHA of the demo's distilled runs when it uses the published teacher", _number(0, 1),
       group="demo"),
    _S("FORMATS", "onnx,torchscript,int8", "export formats", group="demo"),
    _S("PUBLISH_DEVICE", "", "where the published teacher ran, in words (make publish)", group="demo"),
    # the environment
    _S("PYTHON", "python3", "the Python that builds the virtual environment", group="env"),
    _S("VENV", ".venv", "the virtual environment", group="env"),
    _S("TORCH_SPEC", "torch==2.13.0", "the torch requirement installed first", group="env"),
)
DEFAULTS: dict[str, str] = {s.name: s.default for s in SETTINGS}
DEFAULT_DATA = Path(DEFAULTS["DATASET"]).name
_BY_NAME = {s.name: s for s in SETTINGS}
_GROUPS = {"student": "student", "data": "data", "teacher": "teacher and cache", "grid": "sweeps and experiments",
           "demo": "demo, export, publish", "env": "environment"}

TARGETS: tuple[tuple[str, str], ...] = (
    ("demo", "the whole pipeline on Fashion-MNIST, ending in a results table"),
    ("test", "the test suite"),
    ("data", "prepare the dataset"),
    ("teacher", "train the teacher (or every ensemble member)"),
    ("teacher-logits", "run the teacher once and write the HDF5 cache"),
    ("student", "train one student from the cache"),
    ("sweep", "a grid of students from one cache"),
    ("self-distill", "PS-KD: a student taught by its own previous epoch"),
    ("experiment-views", "scratch vs clean-target KD vs replayed views, tuned on held-out rows"),
    ("experiment-pskd", "scratch vs teacher KD vs PS-KD"),
    ("export", "ONNX, TorchScript and int8 files of a finished run"),
    ("report", "tables and figures of every finished run"),
    ("readme-results", "maintainers: rewrite the results block of docs/RESULTS.md from data/runs"),
    ("publish", "a float16 published copy of the cache"),
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


def default(name: str, kind=str):
    """The default of a setting as a typed value (``default('T', float) == 4.0``)."""
    return kind(DEFAULTS[name])


def _spell(value) -> str:
    return number(value) if isinstance(value, float) else str(value)


def number(value) -> str:
    """The one spelling of a number in names: the shortest that reads back the same float,
    without a trailing '.0' (4, 4.0 and 4.00 are all '4'; 0.90 is '0.9')."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


# --- names ---------------------------------------------------------------------------------------------

def data_name(dataset: str, limit: int = 0) -> str:
    """The prepared dataset's name: the dataset's file or directory name, plus -nN for LIMIT=N, so a
    quick run on a subset never replaces the full set (nor its teacher or cache)."""
    stem = Path(dataset.rstrip("/")).name
    stem = stem[:-4] if stem.endswith(".npz") else stem
    return f"{stem}-n{limit}" if limit else stem


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
                    views: int = 1, view_seed: int = 0, mixup: float = 0.0) -> str:
    """The cache of the teacher with ``tag`` on dataset ``data``: everything that changes its content."""
    return data + tag + cache_suffix(temperature=temperature, dtype=dtype, topk=topk, views=views,
                                     view_seed=view_seed, mixup=mixup)


def cache_suffix(*, temperature: float = 1.0, dtype: str = "float32", topk: int = 0, views: int = 1,
                 view_seed: int = 0, mixup: float = 0.0) -> str:
    viewed = ""
    if views > 1:
        viewed = f"-v{views}" + (f"-vs{view_seed}" if view_seed else "") + (f"-mx{number(mixup)}" if mixup else "")
    return f"-T{number(temperature)}-{dtype}" + (f"-top{topk}" if topk else "") + viewed + ".h5"


def member_seeds(first_seed: int, members: int) -> list[int]:
    """The seeds of an ensemble's members (one seed for a single teacher)."""
    return list(range(first_seed, first_seed + members))


def threads_per_run(threads: int, jobs: int, cores: int | None = None) -> int:
    """torch threads for each of JOBS runs side by side: THREADS if given, else the cores shared out
    (at least 1), so parallel runs never oversubscribe the machine."""
    return threads or max(1, (cores or os.cpu_count() or 1) // jobs)


_NUM = r"[0-9.]+(?:e[+-]?[0-9]+)?"
_RUN_RE = re.compile(
    rf"^(?P<student>.+?)-(?:scratch|T(?P<T>{_NUM})-a(?P<alpha>{_NUM})(?:-from(?P<teacher>-.+?))?"
    rf"(?:-(?P<combine>probs|m[0-9]+))?)(?:-r(?P<replay>[0-9]+)|-(?P<augment>aug))?(?:-ho(?P<holdout>[0-9]+))?"
    rf"-s(?P<seed>[0-9]+)-e(?P<epochs>[0-9]+)(?:-on-(?P<data>.+))?$")
_PSKD_RE = re.compile(rf"^(?P<student>.+?)-pskd-a(?P<alpha_T>{_NUM})-s(?P<seed>[0-9]+)-e(?P<epochs>[0-9]+)"
                      rf"(?:-on-(?P<data>.+))?$")


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

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)   # noqa: E731 (frozen dataclass)
        set_("alpha", float(self.alpha))
        if self.alpha == 0:
            set_("T", None), set_("teacher", ""), set_("combine", "logits")
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
        return f"{self.student}-{arm}{inputs}{held}-s{self.seed}-e{self.epochs}{_on(self.data)}"


def _on(data: str) -> str:
    """Runs on another dataset than the default (or on a LIMIT subset) say so, so they never share a
    directory with the default dataset's runs."""
    return f"-on-{data}" if data and data != DEFAULT_DATA else ""


def run_data(prepared: str | Path) -> str:
    """The dataset part of a run's name, from the prepared dataset's file (``.../<data name>.npz``)."""
    stem = Path(prepared).stem
    return "" if stem == DEFAULT_DATA else stem


def run_name(student: str, T: float, alpha: float, seed: int, epochs: int, **inputs) -> str:
    """A student run's directory name: ``-r8`` replays 8 cached views, ``-aug`` augments at random,
    ``-ho5000`` holds 5000 rows out; a distilled run names a non-default teacher (``-from-e30-x3``)
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
                   combine=combine[1:] if combine.startswith("m") else combine, data=g["data"] or "")


def pskd_run_name(student: str, alpha_T: float, seed: int, epochs: int, data: str = "") -> str:
    """A self-distillation (PS-KD) run's directory name."""
    return f"{student}-pskd-a{number(alpha_T)}-s{seed}-e{epochs}{_on(data)}"


def parse_pskd_run_name(name: str) -> dict:
    m = _PSKD_RE.match(name)
    if m is None:
        raise UsageError(f"{name!r} is not a PS-KD run name (e.g. cnn-tiny-pskd-a0.8-s0-e5)")
    g = m.groupdict()
    return {"student": g["student"], "alpha_T": float(g["alpha_T"]), "seed": int(g["seed"]),
            "epochs": int(g["epochs"]), "data": g["data"] or ""}


# --- the plan: everything one Make invocation needs, from its settings ---------------------------------

def _grid(name: str, text: str, parse) -> list:
    values = [parse(name, token) for token in text.replace(",", " ").split()]
    if not values:
        raise UsageError(f"{name} is empty; give at least one value")
    return values


@dataclass
class Plan:
    """The resolved settings and every name derived from them (what Make is told)."""

    settings: dict[str, str]
    given: set[str] = field(default_factory=set)
    root: Path = Path(".")

    def __post_init__(self):
        s = self.settings
        self.limit = check("LIMIT", s["LIMIT"])
        self.members = check("TEACHERS", s["TEACHERS"])
        self.data = data_name(s["DATASET"], self.limit)
        self.teacher_kind = ("published" if s["TEACHER"] == "published" else "file" if is_teacher_file(s["TEACHER"])
                             else "ensemble" if self.members > 1 else "trained")
        epochs, seed = check("TEACHER_EPOCHS", s["TEACHER_EPOCHS"]), check("TEACHER_SEED", s["TEACHER_SEED"])
        self.tag = teacher_tag(s["TEACHER"], epochs, seed, self.members)
        self.seeds = member_seeds(seed, self.members) if self.teacher_kind in ("trained", "ensemble") else []
        self.member_tags = [teacher_tag(s["TEACHER"], epochs, m) for m in self.seeds]
        self.suffix = cache_suffix(temperature=check("TEACHER_T", s["TEACHER_T"]), dtype=s["CACHE_DTYPE"],
                                   topk=check("CACHE_TOPK", s["CACHE_TOPK"]), views=check("VIEWS", s["VIEWS"]),
                                   view_seed=check("VIEW_SEED", s["VIEW_SEED"]), mixup=check("MIXUP", s["MIXUP"]))
        self.published_cache = f"published/{data_name(s['DATASET'])}.h5"
        d = s["DATA_DIR"]
        self.cache = (self.published_cache if self.teacher_kind == "published"
                      else f"{d}/cache/{self.data}{self.tag}{self.suffix}")
        self.threads = threads_per_run(check("THREADS", s["THREADS"]), check("JOBS", s["JOBS"]))

    def path(self, *parts: str) -> str:
        return "/".join((self.settings["DATA_DIR"], *parts))

    def teacher_dir(self, tag: str) -> str:
        return self.path("teacher", self.data + tag)

    def run(self, student: str, T, alpha) -> str:
        s = self.settings
        return run_name(student, float(T), float(alpha), int(s["SEED"]), int(s["EPOCHS"]), replay=int(s["REPLAY"]),
                        augment=s["AUGMENT"] == "1", holdout=int(s["HOLDOUT"]),
                        teacher=self.tag, combine=s["COMBINE"], data=self.data)

    def pskd(self, student: str, seed) -> str:
        s = self.settings
        return pskd_run_name(student, float(s["ALPHA_T"]), int(seed), int(s["EPOCHS"]), self.data)

    def stamps(self) -> dict[str, str]:
        """Parameter stamp file -> the content it must hold (Make rewrites those that differ)."""
        s = self.settings
        out = {self.path("params", f"data-{self.data}.txt"):
               f"dataset={s['DATASET']} source={s['SOURCE']} limit={s['LIMIT']}"}
        for member, tag in zip(self.seeds, self.member_tags):
            out[self.path("params", f"teacher-{self.data}{tag}.txt")] = (
                f"arch={s['TEACHER']} epochs={s['TEACHER_EPOCHS']} seed={member} device={s['DEVICE']}")
        return out

    def demo_settings(self) -> dict[str, str]:
        """The demo learns from the committed published teacher when one exists for the data it uses
        (the full Fashion-MNIST) and the user named no other teacher, with the DEMO_T/DEMO_ALPHA
        recipe chosen for it on held-out rows; otherwise from a teacher trained here."""
        s = self.settings
        named = self.given & {"TEACHER", "TEACHER_EPOCHS", "TEACHER_SEED", "TEACHERS"}
        if (s["DATASET"] == "fashion-mnist" and not self.limit and not named and s["TEACHER"] == "auto"
                and (self.root / self.published_cache).is_file()):
            return {"TEACHER": "published", "T": s["DEMO_T"], "ALPHA": s["DEMO_ALPHA"]}
        return {}


def _cross_checks(s: dict[str, str], p: Plan) -> None:
    """Checks that span several settings (each setting alone is checked by its parser)."""
    if p.members > 1 and p.teacher_kind in ("file", "published"):
        raise UsageError(f"TEACHERS={p.members} trains an ensemble of softcache teachers; TEACHER={s['TEACHER']} "
                         f"is one teacher, so use TEACHERS=1")
    if s["TEACHER"] == "published" and p.limit:
        raise UsageError(f"TEACHER=published was made from the whole dataset, so it cannot teach LIMIT={p.limit} "
                         f"rows; drop LIMIT, or drop TEACHER=published to train a teacher here")
    if p.members > 1 and check("CACHE_TOPK", s["CACHE_TOPK"]):
        raise UsageError(f"an ensemble cache stores every logit; use CACHE_TOPK=0 with TEACHERS={p.members}")
    if check("MIXUP", s["MIXUP"]) and check("VIEWS", s["VIEWS"]) < 2:
        raise UsageError("MIXUP needs cached views to mix: give VIEWS=K (K >= 2) with it")
    if s["AUGMENT"] == "1" and check("REPLAY", s["REPLAY"]):
        raise UsageError("AUGMENT=1 with REPLAY>0 would re-augment the replayed views and break the match with "
                         "their logits; replayed views are already augmented, so drop AUGMENT")
    if s["SWEEP_BACKEND"] == "dask" and not s["SCHEDULER"]:
        raise UsageError("SWEEP_BACKEND=dask needs SCHEDULER=tcp://host:port (a running dask scheduler)")
    if s["TEACHER_WEIGHTS"] and ":" not in s["TEACHER"]:
        raise UsageError("TEACHER_WEIGHTS loads a state dict into a module:factory teacher; give TEACHER=module:factory")


def resolve(given: dict[str, str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Every setting's value: given on the command line, else in the environment (as Make's ?= would
    take it), else its default; the grids default to the single values."""
    environ = os.environ if environ is None else environ
    s = {name: given.get(name, environ.get(name, default_)) for name, default_ in DEFAULTS.items()}
    for grid, single in (("STUDENTS", s["STUDENT"]), ("TS", s["T"]), ("SEEDS", s["SEED"])):
        s[grid] = s[grid] or single
    s["ALPHAS"] = s["ALPHAS"] or f"0 {s['ALPHA']}"
    for name in DEFAULTS:
        check(name, s[name])
    _grid("TS", s["TS"], _number(above=0)), _grid("ALPHAS", s["ALPHAS"], _number(0, 1))
    _grid("SEEDS", s["SEEDS"], _integer(0)), _grid("STUDENTS", s["STUDENTS"], _text)
    return s


def plan(given: dict[str, str], environ: dict[str, str] | None = None, root: Path = Path(".")) -> Plan:
    """Check the settings and derive every name from them; a bad value raises UsageError."""
    environ = os.environ if environ is None else environ
    settings = resolve(given, environ)
    p = Plan(settings, given={k for k in DEFAULTS if k in given or k in environ}, root=root)
    _cross_checks(settings, p)
    return p


# --- what Make reads -------------------------------------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("$", "$$").replace("#", r"\#")


def make_fragment(p: Plan) -> str:
    """Make assignments for one invocation: the settings, the names, the stamps and the run rules' fields."""
    s = p.settings
    lines = [f"override {name} := {_escape(value)}" for name, value in s.items() if name not in ("PYTHON",)]
    sc = f"{s['VENV']}/bin/softcache"
    pass_cmd = (f"{s['VENV']}/bin/torchrun --standalone --nproc-per-node {s['NPROC']} -m stages.cli"
                if s["NPROC"] != "1" else sc)
    data_file = p.path("dataset", f"{p.data}.npz")
    teacher_record = (f"--teacher-record {p.teacher_dir(p.tag)}/teacher.json" if p.teacher_kind == "trained" else "")
    inputs = (f"--replay {s['REPLAY']} {'--augment' if s['AUGMENT'] == '1' else '--no-augment'} "
              f"--holdout {s['HOLDOUT']}")
    member_ckpts = [f"{p.teacher_dir(t)}/teacher.pt" for t in p.member_tags]
    member_caches = [p.path("cache", p.data + t + p.suffix) for t in p.member_tags]
    member_records = [f"{p.teacher_dir(t)}/teacher.json" for t in p.member_tags]
    teacher_files = [f for f in (s["TEACHER"], s["TEACHER_WEIGHTS"]) if f and Path(f).exists()]
    main_run = s["RUN"] or p.run(s["STUDENT"], s["T"], s["ALPHA"])
    demo_students = s["DEMO_STUDENTS"].split()
    demo = {p.run(st, s["T"], a): (st, s["T"], a) for st in demo_students for a in ("0", s["ALPHA"])}
    runs = {p.run(s["STUDENT"], s["T"], s["ALPHA"]): (s["STUDENT"], s["T"], s["ALPHA"]), **demo}
    pskd = {p.pskd(st, seed): (st, seed)
            for st in [s["STUDENT"], *s["STUDENTS"].split()] for seed in [s["SEED"], *s["SEEDS"].split()]}
    pskd_grid = [p.pskd(st, seed) for st in s["STUDENTS"].split() for seed in s["SEEDS"].split()]
    publish = " ".join(f"{k}={s[k]}" for k in ("TEACHER", "TEACHERS", "TEACHER_EPOCHS", "TEACHER_SEED", "TEACHER_T",
                                                "VIEWS", "VIEW_SEED", "MIXUP", "DEVICE"))
    names = {
        "SC": sc, "PASS": pass_cmd, "DATA_FILE": data_file, "PARAMS": p.path("params"),
        "DATA_STAMP": p.path("params", f"data-{p.data}.txt"), "STAMPS": " ".join(p.stamps()),
        "TEACHER_KIND": p.teacher_kind, "TEACHER_TAG": p.tag, "CACHE": p.cache, "CACHE_SUFFIX": p.suffix[:-3],
        "PUBLISHED_CACHE": p.published_cache, "TEACHER_RECORD": teacher_record,
        "TEACHER_FILES": " ".join(teacher_files),
        "TEACHER_TARGETS": " ".join(member_ckpts if p.teacher_kind in ("trained", "ensemble") else teacher_files),
        "MEMBER_CACHES": " ".join(member_caches),
        "ENSEMBLE_ARGS": " ".join(f"--member {c} --record {r}" for c, r in zip(member_caches, member_records)),
        "PUBLISH_RECORDS": " ".join(f"--record {r}" for r in member_records),
        "PUBLISH_COMMAND": f"make teacher-logits {publish}",
        "INPUT_ARGS": inputs, "TEACHER_ARGS": f"--teacher-tag={p.tag} --combine {s['COMBINE']}",
        "RUN_THREADS": str(p.threads), "RUN_DIR": p.path("runs", main_run),
        "STUDENT_RUNS": " ".join(p.path("runs", r, "metrics.json") for r in runs),
        "DEMO_EXPORTS": " ".join(p.path("runs", r, "export", "export.json") for r in demo),
        "PSKD_RUNS": " ".join(p.path("runs", r, "metrics.json") for r in pskd),
        "PSKD_GRID": " ".join(p.path("runs", r, "metrics.json") for r in pskd_grid),
        "PSKD_RUN": p.path("runs", p.pskd(s["STUDENT"], s["SEED"]), "metrics.json"),
        "DEMO_SETTINGS": " ".join(f"{k}={v}" for k, v in p.demo_settings().items()),
    }
    lines += [f"{k} := {_escape(v)}" for k, v in names.items()]
    for stamp, content in p.stamps().items():
        lines.append(f"{stamp}: private STAMP := {_escape(content)}")
        if _read(p.root / stamp) != content:
            lines.append(f"{stamp}: FORCE")
    for ckpt, member in zip(member_ckpts, p.seeds):
        lines.append(f"{ckpt}: private MEMBER_SEED := {member}")
    for run, (student, T, alpha) in runs.items():
        target = p.path("runs", run, "metrics.json")
        lines += [f"{target}: private RUN_STUDENT := {student}", f"{target}: private RUN_T := {T}",
                  f"{target}: private RUN_ALPHA := {alpha}"]
    for run, (student, seed) in pskd.items():
        target = p.path("runs", run, "metrics.json")
        lines += [f"{target}: private RUN_STUDENT := {student}", f"{target}: private RUN_SEED := {seed}"]
    return "\n".join(lines) + "\n"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().rstrip("\n")
    except OSError:
        return None


# Words users reach for that difflib cannot tie to the setting's short name.
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
    lines += [f"  {name:<18}{meaning}" for name, meaning in TARGETS]
    for group, title in _GROUPS.items():
        lines += ["", f"settings: {title} (default in brackets)"]
        lines += [f"  {s.name:<{width}}{s.help} [{s.default or 'unset'}]" for s in SETTINGS if s.group == group]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``make VAR=value ...``: print the fragment (or SETTINGS_ERROR := <message>); ``help``: print help."""
    if argv[:1] == ["help"]:
        sys.stdout.write(help_text())
        return 0
    if argv[:1] != ["make"]:
        sys.stderr.write("usage: python3 -m pipeline.names make [VAR=value ...] | help\n")
        return 2
    given: dict[str, str] = {}
    for arg in argv[1:]:
        name, _, value = arg.partition("=")
        given[name] = value
    for warning in misspelled(list(given)):
        sys.stderr.write(warning + "\n")
    try:
        p = plan({k: v for k, v in given.items() if k in DEFAULTS})
    except UsageError as exc:
        sys.stdout.write(f"SETTINGS_ERROR := {_escape(' '.join(str(exc).split()))}\n")
        return 0
    sys.stdout.write(make_fragment(p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
