"""Make's planner: everything one ``make`` invocation needs, from the settings it was given.

The Makefile asks this module and computes nothing itself: at the top of every ``make`` run it
writes the goals and the command-line variables to a file and calls ``python3 -m pipeline.make_plan
make --given FILE``. This module checks them (a bad value is one line and exit 2 before any file is
touched), resolves the defaults, and prints Make assignments: the settings, the file and run names
derived from them (:mod:`pipeline.names`), and the parameter stamps that are out of date. Only the
Makefile calls it.

It imports nothing outside the standard library (and ``pipeline.errors``, ``settings``, ``names``),
so Make can run it with the system Python before the virtual environment exists. Why an entry point
rather than a fragment file rebuilt by a Make rule: a dry run (``make -n``) must change nothing and
print nothing but the recipes it would run, and a ``$(shell)`` call at parse time is the one place
Make runs a command that neither prints nor counts as a recipe.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.names import (
    FOLDER_SETTINGS,
    SELF_METHOD_KNOBS,
    TEACHER_CHECKPOINT,
    TEACHER_RECORD,
    cache_suffix,
    cache_tag,
    data_name,
    folder_tag,
    image_student_spelling,
    is_image_folder,
    is_teacher_file,
    is_text_dataset,
    lm_run_name,
    member_seeds,
    published_lm_teacher,
    run_name,
    self_run_name,
    teacher_tag,
    text_data_name,
    text_student_spelling,
    text_teacher_tag,
    token_cache_suffix,
)
from pipeline.settings import (
    BRANCH_STUDENTS,
    DEFAULTS,
    LABEL_GRID,
    capped_parallelism,
    check,
    check_augment_replay,
    check_ensemble_storage,
    check_grid,
    check_labels_alpha,
    check_sweep_backend,
    check_views_mixup,
    control_problem,
    help_text,
    misspelled,
)

__all__ = ["Plan", "plan", "resolve", "make_fragment", "read_given", "INTERNAL", "internal_problem", "main"]


# --- the plan: everything one Make invocation needs, from its settings ---------------------------------

@dataclass
class Plan:
    """The resolved settings and every name derived from them (what Make is told)."""

    settings: dict[str, str]
    given: set[str] = field(default_factory=set)
    root: Path = Path(".")
    goals: tuple[str, ...] = ()

    def __post_init__(self):
        s = self.settings
        self.limit = check("LIMIT", s["LIMIT"])
        self.members = check("TEACHERS", s["TEACHERS"])
        self.text = is_text_dataset(s["DATASET"], "TOKENIZER" in self.given)
        self.folder = not self.text and is_image_folder(s["DATASET"])
        self.data = (text_data_name(s["DATASET"], self.limit, s["TOKENIZER"], check("SPLIT_SEED", s["SPLIT_SEED"]))
                     if self.text
                     else data_name(s["DATASET"], self.limit, folder_tag(s) if self.folder else ""))
        self.teacher_kind = ("published" if s["TEACHER"] == "published" else "file" if is_teacher_file(s["TEACHER"])
                             else "ensemble" if self.members > 1 else "trained")
        epochs, seed = check("TEACHER_EPOCHS", s["TEACHER_EPOCHS"]), check("TEACHER_SEED", s["TEACHER_SEED"])
        self.tag = teacher_tag(s["TEACHER"], epochs, seed, self.members)
        self.seeds = member_seeds(seed, self.members) if self.teacher_kind in ("trained", "ensemble") else []
        self.member_tags = [teacher_tag(s["TEACHER"], epochs, m) for m in self.seeds]
        storage = dict(temperature=check("TEACHER_T", s["TEACHER_T"]), dtype=s["CACHE_DTYPE"],
                       topk=check("CACHE_TOPK", s["CACHE_TOPK"]), views=check("VIEWS", s["VIEWS"]),
                       view_seed=check("VIEW_SEED", s["VIEW_SEED"]), mixup=check("MIXUP", s["MIXUP"]),
                       grid=s["CACHE_TS"])
        self.suffix = cache_suffix(**storage, transfer=s["TRANSFER"])
        # Distilled runs name their source of targets: the teacher and, but for the published cache
        # (one fixed file), how its cache was made.
        self.run_source = self.tag + ("" if self.teacher_kind == "published" else cache_tag(**storage))
        if self.text:      # a language-model teacher, its per-token cache (k = 16 and float16 unless given)
            self.context, self.steps = check("CONTEXT", s["CONTEXT"]), check("TEACHER_STEPS", s["TEACHER_STEPS"])
            self.tag = text_teacher_tag(s["TEACHER"], self.steps, self.context, seed)
            self.member_tags = [self.tag] if self.seeds else []
            self.topk = storage["topk"] if "CACHE_TOPK" in self.given else 16
            self.dtype = s["CACHE_DTYPE"] if "CACHE_DTYPE" in self.given else "float16"
            self.suffix = token_cache_suffix(context=self.context, topk=self.topk, dtype=self.dtype,
                                             temperatures=[float(t) for t in s["CACHE_TS"].replace(",", " ").split()])
            self.run_source = self.tag
            # TEACHER=published: the committed weights (when they exist) are the user's own teacher file
            self.published_teacher = published_lm_teacher(s["DATASET"], s["TOKENIZER"])
            if self.teacher_kind == "published" and (self.root / self.published_teacher).is_file():
                s["TEACHER"], self.teacher_kind = self.published_teacher, "file"
            if "demo" in self.goals and "JOBS" not in self.given:    # its scratch and distilled runs side by
                s["JOBS"] = "2"                                          # side: a small LM uses one core best
            if "STUDENT" not in self.given:     # the image default means nothing for text
                s["STUDENT"] = "lm-small"
                s["STUDENTS"] = s["STUDENTS"] if "STUDENTS" in self.given else "lm-small"
        self.published_cache = f"published/{data_name(s['DATASET'])}.h5"
        d = s["DATA_DIR"]
        self.cache = (self.published_cache if self.teacher_kind == "published"
                      else f"{d}/cache/{self.data}{self.tag}{self.suffix}")
        self.jobs, self.threads, self.parallel_note = capped_parallelism(check("JOBS", s["JOBS"]),
                                                                         check("THREADS", s["THREADS"]))
        self.label_grid = s["LABELS"].split() if "LABELS" in self.given else LABEL_GRID.split()
        single = s["LABELS"].split()
        self.labels = None if len(single) != 1 or single[0] == "all" else int(single[0])

    def path(self, *parts: str) -> str:
        return "/".join((self.settings["DATA_DIR"], *parts))

    @property
    def teacher_stamp(self) -> str:
        return self.path("params", f"teacher-{self.data}{self.tag}.txt")

    def teacher_dir(self, tag: str) -> str:
        return self.path("teacher", self.data + tag)

    def run(self, student: str, T, alpha, labels: int | None = None) -> str:
        """A student run's name; ``labels``: the demo's few-label pair's own LABELS (else the setting's)."""
        s = self.settings
        if self.text:
            return lm_run_name(student, float(T), float(alpha), int(s["SEED"]), int(s["STEPS"]), self.data, self.tag)
        return run_name(student, float(T), float(alpha), int(s["SEED"]), int(s["EPOCHS"]), replay=int(s["REPLAY"]),
                        augment=s["AUGMENT"] == "1", holdout=int(s["HOLDOUT"]),
                        teacher=self.run_source, combine=s["COMBINE"], data=self.data,
                        labels=self.labels if labels is None else labels,
                        transfer=s["TRANSFER"])

    def pskd(self, student: str, seed) -> str:
        """A self-distillation run's name: METHOD and its own settings (as SelfDistillConfig.knobs)."""
        s = self.settings
        if self.text:       # PS-KD only: the LM student stage, its own earlier state teaching it
            return lm_run_name(student, 1.0, 0.0, int(seed), int(s["STEPS"]), self.data,
                               self_alpha_T=float(s["ALPHA_T"]))
        knobs = {key: float(s[name]) for key, _, name in SELF_METHOD_KNOBS[s["METHOD"]]}
        return self_run_name(student, s["METHOD"], knobs, int(seed), int(s["EPOCHS"]), self.data, labels=self.labels,
                             holdout=int(s["HOLDOUT"]))

    def stamps(self) -> dict[str, str]:
        """Parameter stamp file -> the content it must hold (Make rewrites those that differ)."""
        s = self.settings
        out = {self.path("params", f"data-{self.data}.txt"):
               f"dataset={s['DATASET']} source={s['SOURCE']} limit={s['LIMIT']}"
               + (f" layout={s['LAYOUT']}" if s["LAYOUT"] != "auto" else "")   # old stamps stay valid
               + "".join(f" {k.lower()}={s[k]}" for k in FOLDER_SETTINGS if self.folder)}
        if self.text:
            out[self.path("params", f"data-{self.data}.txt")] = (f"dataset={s['DATASET']} tokenizer={s['TOKENIZER']} "
                                                                 f"split_seed={s['SPLIT_SEED']} limit={s['LIMIT']}")
        if self.teacher_kind == "file":     # the user's file or folder: rebuilt when what lies there changes
            out[self.teacher_stamp] = (f"teacher={s['TEACHER']} weights={s['TEACHER_WEIGHTS']} identity="
                                       f"{file_identity(s['TEACHER'], s['TEACHER_WEIGHTS'])}")
        for member, tag in zip(self.seeds, self.member_tags):
            out[self.path("params", f"teacher-{self.data}{tag}.txt")] = (
                f"arch={s['TEACHER']} epochs={s['TEACHER_EPOCHS']} seed={member} device={s['DEVICE']}"
                + (f" steps={self.steps} context={self.context}" if self.text else ""))
        return out

    def demo_settings(self) -> dict[str, str]:
        """The demo learns from the committed published teacher when one exists for the data it uses
        (the full Fashion-MNIST) and the user named no other teacher, with the DEMO_T/DEMO_ALPHA
        recipe chosen for it on held-out rows; otherwise from a teacher trained here. For text it learns
        from the published LM teacher's weights unless a TEACHER is named (refused where none is published)."""
        s = self.settings
        if self.text:   # the committed LM teacher on DEMO_LIMIT bytes: minutes on a CPU
            short = {} if "LIMIT" in self.given else {"LIMIT": s["DEMO_LIMIT"]}
            if "JOBS" not in self.given:     # scratch and distilled side by side (__post_init__)
                short["JOBS"] = s["JOBS"]
            return short if "TEACHER" in self.given else {**short, "TEACHER": "published", "T": s["DEMO_T"],
                                                           "ALPHA": s["DEMO_ALPHA"]}
        named = self.given & {"TEACHER", "TEACHER_EPOCHS", "TEACHER_SEED", "TEACHERS"}
        if (s["DATASET"] == DEFAULTS["DATASET"] and not self.limit and not named
                and (self.root / self.published_cache).is_file()):
            return {"TEACHER": "published", "T": s["DEMO_T"], "ALPHA": s["DEMO_ALPHA"]}
        return {}


# What a text DATASET builds today, and the image-only settings it refuses rather than ignores.
TEXT_GOALS = {"help", "venv", "data", "teacher", "teacher-logits", "student", "self-distill", "export", "experiment-lm", "demo",
              "demo-runs", "report", "publish", "test", "bench", "clean", "clean-students"}
IMAGE_ONLY = ("LAYOUT", "VIEWS", "MIXUP", "TRANSFER", "LABELS", "REPLAY", "AUGMENT", "HOLDOUT", "TEACHER_T",
              "TEACHERS", "TEACHER_EPOCHS", "TEACHER_WEIGHTS", "SOURCE", "EPOCHS")
TEXT_ONLY = ("CONTEXT", "STEPS", "TEACHER_STEPS")


def _on_the_grid(s: dict[str, str], goals: list[str]) -> None:
    """A student's T (or a grid's TS) must be one the top-k cache holds the exact tail at: said before the
    cache is built, not after."""
    grid = {float(t) for t in s["CACHE_TS"].replace(",", " ").split()}
    asked = s["TS"] if {"sweep", "experiment-lm", "experiment-views", "experiment-labels", "experiment-patient"} & set(goals) \
        else s["T"] if {"student", "demo", "demo-runs", "export"} & set(goals) else ""
    for T in asked.replace(",", " ").split():
        if float(T) not in grid:
            raise UsageError(f"T={T} is not in CACHE_TS={s['CACHE_TS']}, the temperatures a top-k cache holds the exact "
                             f"tail at; use one of them, or add it: CACHE_TS=\"{s['CACHE_TS']} {T}\"")


def _text_checks(s: dict[str, str], p: Plan, goals: list[str]) -> None:
    """A text DATASET: the settings that mean nothing for text are refused by name, as are the targets that
    train image students."""
    for name in IMAGE_ONLY:
        if name in p.given and s[name] != DEFAULTS[name]:
            raise UsageError(f"{name} applies to images, and DATASET={s['DATASET']} is text; drop {name}")
    if p.teacher_kind == "published":     # the committed weights are missing (found, it is a file teacher)
        raise UsageError(f"no published LM teacher exists for DATASET={s['DATASET']} TOKENIZER={s['TOKENIZER']} (no "
                         f"{p.published_teacher}); use TEACHER=auto to train one here, or TEACHER=<a local Hugging "
                         f"Face folder or an lm-teacher checkpoint>")
    if "publish" in goals and (p.teacher_kind != "trained" or p.limit):
        raise UsageError(f"make publish for text publishes an LM teacher trained here on the whole corpus; drop "
                         f"{'LIMIT' if p.limit else 'TEACHER'}")
    for student in (s["STUDENT"], *s["STUDENTS"].replace(",", " ").split()):
        if image_student_spelling(student):
            raise UsageError(f"STUDENT={student} is an image student, and DATASET={s['DATASET']} is text; give "
                             f"STUDENT=lm-tiny, lm-small, lm-medium, hf-llama-small, hf:<config> or module:factory")
    if "TS" not in p.given and "experiment-lm" in goals:      # the experiment's own grid, on the default CACHE_TS
        s = {**s, "TS": ""}
    _on_the_grid(s, goals)
    unbuilt = sorted(set(goals) - TEXT_GOALS)
    if unbuilt:
        raise UsageError(f"make {unbuilt[0]} is built for images only, and DATASET={s['DATASET']} is text; for text, "
                         f"make data, teacher, teacher-logits, student and self-distill")


def _cross_checks(s: dict[str, str], p: Plan, goals: list[str]) -> None:
    """Checks that span several settings (each setting alone is checked by its parser)."""
    if p.text:
        if s["METHOD"] != "pskd" and "self-distill" in goals:
            raise UsageError(f"METHOD={s['METHOD']} applies to images (classes to pair, stages to branch); a language "
                             f"model self-distills with METHOD=pskd")
        return _text_checks(s, p, goals)
    if check("CACHE_TOPK", s["CACHE_TOPK"]):
        _on_the_grid(s, goals)
    for student in (s["STUDENT"], *s["STUDENTS"].replace(",", " ").split(), *s["DEMO_STUDENTS"].replace(",", " ").split()):
        if text_student_spelling(student):
            raise UsageError(f"STUDENT={student} is a language-model student, and DATASET={s['DATASET']} is images; "
                             f"give an image student (mlp, cnn-tiny, cnn-small, timm:<name> or module:factory)")
    if "experiment-lm" in goals:
        raise UsageError(f"make experiment-lm compares language-model students, and DATASET={s['DATASET']} is images; "
                         f"give DATASET=stdlib (or another text)")
    for name in TEXT_ONLY:
        if name in p.given and s[name] != DEFAULTS[name]:
            raise UsageError(f"{name} applies to text, and DATASET={s['DATASET']} is images; drop {name}, or give "
                             f"DATASET=stdlib (or another text)")
    for name in FOLDER_SETTINGS:
        if not p.folder and name in p.given and s[name] != DEFAULTS[name]:
            raise UsageError(f"{name} applies to image folders (train/<class>/*), and DATASET={s['DATASET']} is not "
                             f"one; drop {name}, or give DATASET=<folder>")
    if s["METHOD"] == "byot" and {"self-distill", "experiment-pskd"} & set(goals):
        for student in (s["STUDENT"],) if "self-distill" in goals else s["STUDENTS"].replace(",", " ").split():
            if student not in BRANCH_STUDENTS:
                raise UsageError(f"METHOD=byot attaches branches to the stages of softcache's convolutional students "
                                 f"({', '.join(BRANCH_STUDENTS)}); {student} has no stages to attach to: choose one "
                                 f"of those, or METHOD=pskd or cskd")
    if len(s["LABELS"].split()) != 1 and set(goals) - {"experiment-labels", "help"}:
        raise UsageError(f"LABELS=\"{s['LABELS']}\" lists several label counts, which only experiment-labels runs; "
                         f"give one count (or all) for {' '.join(goals) or 'this target'}")
    if p.labels == 0 and set(goals) - {"help"}:   # the ALPHA values the asked-for targets train with
        grids = {"sweep", "experiment-pskd"} & set(goals)
        for alpha in s["ALPHAS"].split() if grids else [s["ALPHA"]]:
            check_labels_alpha(0, check("ALPHA", alpha))
    if p.members > 1 and p.teacher_kind in ("file", "published"):
        raise UsageError(f"TEACHERS={p.members} trains an ensemble of softcache teachers; TEACHER={s['TEACHER']} "
                         f"is one teacher, so use TEACHERS=1")
    if s["TEACHER"] == "published" and s["TRANSFER"]:
        raise UsageError(f"TEACHER=published holds no logits for TRANSFER={s['TRANSFER']} (the teacher is not "
                         f"published, only its cache); drop TRANSFER, or drop TEACHER=published to train one here")
    if s["TEACHER"] == "published" and p.limit:
        raise UsageError(f"TEACHER=published was made from the whole dataset, so it cannot teach LIMIT={p.limit} "
                         f"rows; drop LIMIT, or drop TEACHER=published to train a teacher here")
    if "publish" in goals and p.limit:
        raise UsageError(f"make publish publishes a cache of the whole dataset, not of LIMIT={p.limit} rows; drop LIMIT")
    check_ensemble_storage(p.members, check("CACHE_TOPK", s["CACHE_TOPK"]))
    check_views_mixup(check("VIEWS", s["VIEWS"]), check("MIXUP", s["MIXUP"]))
    check_augment_replay(s["AUGMENT"] == "1", check("REPLAY", s["REPLAY"]))
    check_sweep_backend(s["SWEEP_BACKEND"], s["SCHEDULER"])
    if s["TEACHER_WEIGHTS"] and ":" not in s["TEACHER"]:
        raise UsageError("TEACHER_WEIGHTS loads a state dict into a module:factory teacher; give TEACHER=module:factory")


def resolve(given: dict[str, str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Every setting's value: given on the command line, else in the environment (as Make's ?= would
    take it), else its default; the grids default to the single values."""
    environ = os.environ if environ is None else environ
    s = {name: given.get(name, environ.get(name, default_)) for name, default_ in DEFAULTS.items()}
    for grid, single in (("STUDENTS", s["STUDENT"]), ("TS", s["T"]), ("SEEDS", s["SEED"])):
        s[grid] = s[grid] or single
    s["ALPHAS"] = s["ALPHAS"] or ("0" if check("ALPHA", s["ALPHA"]) == 0 else f"0 {s['ALPHA']}")
    for name in DEFAULTS:
        if name != "LABELS":
            check(name, s[name])
    labels = s["LABELS"].split()
    check("LABELS", s["LABELS"]) if len(labels) == 1 else check_grid("LABELS", labels, "LABELS")
    for grid, setting in (("TS", "T"), ("ALPHAS", "ALPHA"), ("SEEDS", "SEED"), ("STUDENTS", "STUDENT"),
                          ("LENGTHS", "EPOCHS")):
        check_grid(grid, s[grid].replace(",", " ").split(), setting)
    if s["BANKS"].strip():
        check_grid("BANKS", s["BANKS"].replace(",", " ").split(), "VIEWS")
    return s


def plan(given: dict[str, str], environ: dict[str, str] | None = None, root: Path = Path("."),
         goals: list[str] = ()) -> Plan:
    """Check the settings and derive every name from them; a bad value raises UsageError.
    ``goals``: the make targets asked for, for the checks that depend on them."""
    environ = os.environ if environ is None else environ
    settings = resolve(given, environ)
    p = Plan(settings, given={k for k in DEFAULTS if k in given or k in environ}, root=root, goals=tuple(goals))
    _cross_checks(settings, p, list(goals))
    return p


def file_identity(*specs: str) -> str:
    """Where a teacher file or folder lies and what it holds, as Make can afford to ask on every run: the
    real path, and every file's relative name, size and modification time (a folder's files recursively).
    Another folder of the same name, or weights overwritten in place, change it, so Make runs the pass
    again; the pass itself then knows the teacher by what it loads (its fingerprint)."""
    h = hashlib.sha256()
    for spec in specs:
        if not spec or ":" in spec and not Path(spec).exists():      # module:factory: its weights file counts
            continue
        root = Path(spec)
        h.update(os.path.realpath(root).encode("utf-8", "surrogateescape") + b"\0")
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] if root.exists() else []
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(root) if root.is_dir() else ''}\0{st.st_size}\0{st.st_mtime_ns}\0".encode(
                "utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


# --- what Make reads -------------------------------------------------------------------------------------

def _escape(value: str) -> str:
    """A value as the right-hand side of a Make ``:=`` line. Every value was checked for line breaks
    and control characters (``settings.control_problem``), so the line stays one line."""
    assert control_problem("value", value) is None and not value.endswith("\\"), value
    return value.replace("$", "$$").replace("#", r"\#")


# What the Makefile and this module's fragment define for themselves: never a user's to set. Given on
# the command line, each would silently win over the value softcache computes (CACHE=<file> trained
# from that file under the default cache's name; SC=/bin/echo "finished" with no run written).
INTERNAL = frozenset({
    "SC", "PASS", "INSTALLED", "RUNS", "REPORT_FILE", "DATA_FILE", "PARAMS", "DATA_STAMP", "STAMPS", "TEACHER_KIND",
    "TEACHER_TAG", "CACHE", "CACHE_SUFFIX", "PUBLISH_FROM", "TEACHER_RECORD", "TEACHER_FILES", "TEACHER_TARGETS",
    "MEMBER_CACHES", "ENSEMBLE_ARGS", "PUBLISH_ARGS", "INPUT_ARGS", "LABEL_GRID", "DATA_CHECK",
    "DATA_ARGS", "TEACHER_FIT", "PASS_STAGE", "STUDENT_STAGE", "STUDENT_ARGS", "LM_EXPERIMENT_ARGS", "TRANSFER_ARGS",
    "LOG_ARGS", "TEACHER_ARGS", "RUN_THREADS", "RUN_DIR", "STUDENT_RUNS",
    "DEMO_EXPORTS", "SELF_ARGS", "SELFKD_ARGS", "EXPERIMENT_COMMON", "PSKD_RUNS", "PSKD_GRID", "PSKD_RUN", "DEMO_SETTINGS", "STAMP", "MEMBER_SEED", "RUN_STUDENT",
    "RUN_T", "RUN_ALPHA", "RUN_LABELS", "RUN_SELF", "RUN_SEED", "NAMES_OK", "SETTINGS_ERROR", "PASS_ARGS",
    # the Makefile's own
    "SHELL", "NEWLINE", "GIVEN", "NAMES_IN", "NAMES_MK", "NAMES_RC", "REPORT", "SWEEP",
    "EXPERIMENT_ARGS", "BENCHMARKS", "SOFTCACHE_CALLER",
})


# The fragment's variables that hold a rule's target path (see make_fragment's ``rule``).
TARGET_PREFIX = "SC_TARGET_"
# The ALPHA of the demo's few-label distilled run: the one docs/RESULTS.md's few-labels experiment chose on held-out rows.
FEW_LABEL_ALPHA = "0.5"


def internal_problem(given) -> str | None:
    """A command-line variable that names one of softcache's own Make variables."""
    taken = sorted((set(given) & INTERNAL) | {name for name in given if name.startswith(TARGET_PREFIX)})
    if taken:
        return (f"{', '.join(taken)} {'is' if len(taken) == 1 else 'are'} softcache's own (derived from the settings, "
                f"see 'make help'), not a setting; drop {taken[0]}=... from the command line")
    return None


def make_fragment(p: Plan) -> str:
    """Make assignments for one invocation: the settings, the names, the stamps and the run rules' fields."""
    s = p.settings
    lines = [f"override {name} := {_escape(value)}" for name, value in s.items() if name not in ("PYTHON",)]
    lines.append(f"override JOBS := {p.jobs}")
    sc = f"{s['VENV']}/bin/softcache"
    pass_cmd = (f"{s['VENV']}/bin/torchrun --standalone --nproc-per-node {s['NPROC']} -m stages.cli"
                if s["NPROC"] != "1" else sc)
    # An image folder's images stay on disk (pipeline.data.image_store): HDF5, read a batch at a time.
    data_file = (p.path("text", f"{p.data}.h5") if p.text
                 else p.path("dataset", f"{p.data}{'.h5' if p.folder else '.npz'}"))
    q = shlex.quote    # every value is checked against an alphabet already; quoted all the same
    log_args = f"--tensorboard-dir {q(p.path('tensorboard'))}" if s["LOG"] == "tensorboard" else ""
    teacher_args = f"--teacher-tag={q(p.run_source)} --combine {q(s['COMBINE'])}"
    teacher_record = (f"--teacher-record {q(p.teacher_dir(p.tag) + '/' + TEACHER_RECORD)}"
                      if p.teacher_kind == "trained" else "")
    inputs = (f"--replay {q(s['REPLAY'])} {'--augment' if s['AUGMENT'] == '1' else '--no-augment'} "
              f"--holdout {q(s['HOLDOUT'])}" + ("" if p.labels is None else f" --labels {p.labels}")
              + (f" --transfer {q(s['TRANSFER'])}" if s["TRANSFER"] else "")
              + f" --checkpoint-every {q(s['CHECKPOINT_EVERY'])} --checkpoint-minutes {q(s['CHECKPOINT_MINUTES'])}")
    member_ckpts = [f"{p.teacher_dir(t)}/{TEACHER_CHECKPOINT}" for t in p.member_tags]
    member_caches = [p.path("cache", p.data + t + p.suffix) for t in p.member_tags]
    member_records = [f"{p.teacher_dir(t)}/{TEACHER_RECORD}" for t in p.member_tags]
    teacher_files = [f for f in (s["TEACHER"], s["TEACHER_WEIGHTS"]) if f and Path(f).exists()]
    if p.teacher_kind == "file":
        teacher_files.append(p.teacher_stamp)
    student_run = p.run(s["STUDENT"], s["T"], s["ALPHA"])
    demo_students = s["STUDENTS" if p.text else "DEMO_STUDENTS"].replace(",", " ").split()
    demo = {p.run(st, s["T"], a): (st, s["T"], a, "") for st in demo_students for a in ("0", s["ALPHA"])}
    # Where the cache pays most, beside the rest: on the full default dataset, or wherever DEMO_LABELS is given
    # (another dataset may hold fewer rows than the default 1,200 labels).
    few_labels = "DEMO_LABELS" in p.given or (s["DATASET"] == DEFAULTS["DATASET"] and not p.limit)
    if s["DEMO_LABELS"] and few_labels and not p.text and p.labels is None:
        pair = "cnn-tiny" if "cnn-tiny" in demo_students else demo_students[0]
        demo.update({p.run(pair, s["T"], a, int(s["DEMO_LABELS"])): (pair, s["T"], a, s["DEMO_LABELS"])
                     for a in ("0", FEW_LABEL_ALPHA)})
    runs = {student_run: (s["STUDENT"], s["T"], s["ALPHA"], ""), **demo}
    # text: `make self-distill` is a PS-KD run of the LM student stage (ALPHA=0, RUN_SELF=ALPHA_T)
    text_pskd = {p.pskd(s["STUDENT"], s["SEED"]): s["ALPHA_T"]} if p.text else {}
    runs.update({run: (s["STUDENT"], s["T"], "0", "") for run in text_pskd})
    stamps = p.stamps()
    pskd = {} if p.text else {p.pskd(st, seed): (st, seed)
            for st in [s["STUDENT"], *s["STUDENTS"].split()] for seed in [s["SEED"], *s["SEEDS"].split()]}
    pskd_grid = [] if p.text else [p.pskd(st, seed) for st in s["STUDENTS"].split() for seed in s["SEEDS"].split()]
    # make publish: the image cache in float16 (from the GPU box), or for text the LM teacher's weights
    made_by = ("DATASET", "TOKENIZER", "TEACHER", "TEACHER_STEPS", "CONTEXT", "TEACHER_SEED", "DEVICE") if p.text else (
        "TEACHER", "TEACHERS", "TEACHER_EPOCHS", "TEACHER_SEED", "TEACHER_T", "VIEWS", "VIEW_SEED", "MIXUP", "DEVICE")
    command = q(f"make {'teacher' if p.text else 'teacher-logits'} " + " ".join(f"{k}={s[k]}" for k in made_by))
    publish = (f"publish-lm-teacher --teacher {q(' '.join(member_ckpts))} --text {q(data_file)} --out "
               f"{q(p.published_teacher)} --command {command}" if p.text else
               f"publish --cache {q(p.cache)} --out {q(p.published_cache)} --command {command} "
               + " ".join(f"--record {q(r)}" for r in member_records))
    names = {
        "SC": sc, "PASS": pass_cmd, "INSTALLED": f"{s['VENV']}/.installed", "RUNS": p.path("runs"),
        "REPORT_FILE": p.path("reports", "report.md"), "DATA_FILE": data_file, "PARAMS": p.path("params"),
        "DATA_STAMP": p.path("params", f"data-{p.data}.txt"), "STAMPS": " ".join(stamps),
        "TEACHER_KIND": p.teacher_kind, "TEACHER_TAG": p.tag, "CACHE": p.cache, "CACHE_SUFFIX": p.suffix[:-3],
        "PUBLISH_FROM": " ".join(member_ckpts) if p.text else p.cache, "PUBLISH_ARGS": publish,
        "TEACHER_RECORD": teacher_record,
        "TEACHER_FILES": " ".join(teacher_files),
        "TEACHER_TARGETS": " ".join(member_ckpts if p.teacher_kind in ("trained", "ensemble") else teacher_files),
        "MEMBER_CACHES": " ".join(member_caches),
        "ENSEMBLE_ARGS": " ".join(f"--member {q(c)} --record {q(r)}" for c, r in zip(member_caches, member_records)),
        "INPUT_ARGS": inputs, "LABEL_GRID": " ".join(p.label_grid),
        # an image folder or a text corpus is re-checked on every run: an edited file, .jsonl or tokenizer.json
        # at the same path is noticed by its fingerprint (an unchanged prepared file keeps its time)
        "DATA_CHECK": "FORCE" if p.folder or p.text else "",
        "DATA_ARGS": (f"--tokenizer {q(s['TOKENIZER'])} --split-seed {q(s['SPLIT_SEED'])}" if p.text else
                      " ".join(f"--{k.lower().replace('_', '-')} {q(s[k])}" for k in FOLDER_SETTINGS if p.folder and s[k])),
        # the teacher trained here: an image classifier, or a causal language model for text
        "TEACHER_FIT": (f"lm-teacher --text {q(data_file)} --arch {q('lm-teacher' if s['TEACHER'] == 'auto' else s['TEACHER'])} "
                        f"--steps {p.steps} --context {p.context}" if p.text else
                        f"teacher --dataset {q(data_file)} --arch {q(s['TEACHER'])} --epochs {q(s['TEACHER_EPOCHS'])} "
                        + (f"--tensorboard-dir {q(p.path('tensorboard'))}" if s["LOG"] == "tensorboard" else "")),
        "PASS_STAGE": "token-logits" if p.text else "teacher-logits",
        # a student run's stage and the arguments that differ between images and text
        "STUDENT_STAGE": "lm-student" if p.text else "student",
        # experiment-lm's: its grids only where given (else its own), like every other argument block
        "LM_EXPERIMENT_ARGS": (f"--cache {q(p.cache)} --text {q(data_file)} --runs-dir {q(p.path('runs'))} --tuning-dir "
                               f"{q(p.path('tuning'))} --reports-dir {q(p.path('reports'))} --steps {q(s['STEPS'])} "
                               f"--jobs {p.jobs} --threads {p.threads} "
                               + " ".join(f"--{flag} {q(s[k])}" for flag, k in (("students", "STUDENTS"), ("Ts", "TS"),
                                          ("alphas", "ALPHAS"), ("seeds", "SEEDS")) if k in p.given)),
        "STUDENT_ARGS": (f"--text {q(data_file)} --steps {q(s['STEPS'])}"
                         + (f" --tensorboard-dir {q(p.path('tensorboard'))}" if s["LOG"] == "tensorboard" else "") if p.text else
                         f"--dataset {q(data_file)} {teacher_record} --epochs {q(s['EPOCHS'])} {inputs} "
                         f"--teacher-tag={q(p.run_source)} --combine {q(s['COMBINE'])}"
                         + (f" --tensorboard-dir {q(p.path('tensorboard'))}" if s["LOG"] == "tensorboard" else "")),
        "TRANSFER_ARGS": f"--transfer {q(s['TRANSFER'])}" if s["TRANSFER"] else "",
        # every teacher pass's cache settings, whichever teacher it runs
        "PASS_ARGS": (f"--text {q(data_file)} --topk {p.topk} --dtype {p.dtype} --temperatures {q(s['CACHE_TS'])} "
                      f"--context {p.context} --device {q(s['DEVICE'])}") if p.text else
                     f"--dataset {q(data_file)} " + " ".join(f"--{flag} {q(s[k])}" for flag, k in (
                         ("temperature", "TEACHER_T"), ("dtype", "CACHE_DTYPE"), ("topk", "CACHE_TOPK"),
                         ("views", "VIEWS"), ("view-seed", "VIEW_SEED"), ("mixup", "MIXUP"), ("device", "DEVICE")))
                     + (f" --transfer {q(s['TRANSFER'])}" if s["TRANSFER"] else "")
                     + (f" --temperatures {q(s['CACHE_TS'])}" if check("CACHE_TOPK", s["CACHE_TOPK"]) else ""),
        "LOG_ARGS": log_args, "TEACHER_ARGS": teacher_args,
        # what every image experiment is told: its cache, data, folders, held-out rows, parallelism and teacher
        "EXPERIMENT_COMMON": (f"--cache {q(p.cache)} --dataset {q(data_file)} {teacher_record} --runs-dir "
                              f"{q(p.path('runs'))} --tuning-dir {q(p.path('tuning'))} --reports-dir "
                              f"{q(p.path('reports'))} --holdout {q(s['EXPERIMENT_HOLDOUT'])} --jobs {q(s['JOBS'])} "
                              f"--threads {p.threads} {teacher_args} {log_args}"),
        "RUN_THREADS": str(p.threads), "RUN_DIR": p.path("runs", s["RUN"] or student_run),
        "STUDENT_RUNS": " ".join(p.path("runs", r, "metrics.json") for r in runs),
        "DEMO_EXPORTS": " ".join(p.path("runs", r, "export", "export.json") for r in demo),
        # experiment-selfkd's: the few-label setting, and its grids only where given (else its own: two
        # convolutional students, 3 seeds)
        "SELFKD_ARGS": " ".join([f"--few-labels {q(s['DEMO_LABELS'])} --epochs {q(s['EPOCHS'])}"]
                                + (["--augment"] if s["AUGMENT"] == "1" else [])
                                + [f"--{flag} {q(s[k])}" for flag, k in (("students", "STUDENTS"), ("Ts", "TS"),
                                   ("alphas", "ALPHAS"), ("seeds", "SEEDS")) if k in p.given]),
        # a self-distillation run's method and its own settings, and the recipe it shares with a student run
        "SELF_ARGS": " ".join([f"--method {q(s['METHOD'])}", f"--holdout {q(s['HOLDOUT'])}"]
                              + [f"--{_config_flag(name)} {q(s[name])}"
                                 for _, _, name in SELF_METHOD_KNOBS[s["METHOD"]]]
                              + ([f"--labels {p.labels}"] if p.labels is not None else [])
                              + [f"--epochs {q(s['EPOCHS'])} --threads {p.threads}", log_args]).strip(),
        "PSKD_RUNS": " ".join(p.path("runs", r, "metrics.json") for r in pskd),
        "PSKD_GRID": " ".join(p.path("runs", r, "metrics.json") for r in pskd_grid),
        "PSKD_RUN": p.path("runs", p.pskd(s["STUDENT"], s["SEED"]), "metrics.json"),
        "DEMO_SETTINGS": " ".join(f"{k}={v}" for k, v in p.demo_settings().items()),
    }
    assert set(names) <= INTERNAL, set(names) - INTERNAL
    lines += [f"override {k} := {_escape(v)}" for k, v in names.items()]
    targets: dict[str, str] = {}

    def rule(path: str, assignment: str) -> None:
        """``<path>: <assignment>`` with the path behind a variable: a rule line that begins with the path
        itself is read by Make as an assignment wherever the path holds '=' (DATA_DIR=PYTHON=dir set
        PYTHON), and as a pattern or a home directory where it holds '%' or begins with '~'."""
        if path not in targets:
            targets[path] = f"{TARGET_PREFIX}{len(targets)}"
            lines.append(f"override {targets[path]} := {_escape(path)}")
        lines.append(f"$({targets[path]}): {assignment}")

    for stamp, content in stamps.items():
        rule(stamp, f"private STAMP := {_escape(content)}")
        if _read(p.root / stamp) != content:
            rule(stamp, "FORCE")
    for ckpt, member in zip(member_ckpts, p.seeds):
        rule(ckpt, f"private MEMBER_SEED := {member}")
    for run, (student, T, alpha, labels) in runs.items():
        target = p.path("runs", run, "metrics.json")
        for name, value in (("RUN_STUDENT", student), ("RUN_T", T), ("RUN_ALPHA", alpha), ("RUN_LABELS", labels),
                            ("RUN_SELF", text_pskd.get(run, ""))):
            rule(target, f"private {name} := {_escape(value)}")
    for run, (student, seed) in pskd.items():
        target = p.path("runs", run, "metrics.json")
        for name, value in (("RUN_STUDENT", student), ("RUN_SEED", seed)):
            rule(target, f"private {name} := {_escape(value)}")
    lines.append("override NAMES_OK := 1")    # the Makefile stops unless it read this last line
    return "\n".join(lines) + "\n"


def _config_flag(setting: str) -> str:
    """The stage's flag for a setting a config field carries: the field's name in kebab case, where a
    temperature keeps its capital (ALPHA_T is the field alpha_T, flag --alpha-T; BYOT_T is --byot-T)."""
    flag = setting.lower().replace("_", "-")
    return flag[:-2] + "-T" if setting.endswith("_T") else flag


def _read(path: Path) -> str | None:
    try:
        return path.read_text().rstrip("\n")
    except OSError:
        return None


def read_given(path: Path) -> tuple[list[str], dict[str, str]]:
    """The file the Makefile writes with ``$(file ...)``: the goals on the first line, then one
    ``NAME=value`` a line, each value as given (``$(value NAME)``, never expanded). Make joins the
    lines of a ``$(foreach)`` with a space, so a name may start with one; the Makefile has already
    refused a value holding a line break."""
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").split("\n")
    goals = lines[0].split()
    given: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip():
            name, _, value = line.partition("=")
            given[name.strip()] = value
    return goals, given


def _settings_error(message: str) -> str:
    return f"override SETTINGS_ERROR := {_escape(' '.join(message.split()))}\noverride NAMES_OK := 1\n"


def main(argv: list[str]) -> int:
    """``make --given FILE``: print the fragment (or SETTINGS_ERROR := <message>) for the goals and
    command-line variables in FILE (see :func:`read_given`); ``help``: print help."""
    if argv[:1] == ["help"]:
        sys.stdout.write(help_text())
        return 0
    if argv[:2] != ["make", "--given"] or len(argv) != 3:
        sys.stderr.write("usage: python3 -m pipeline.make_plan make --given FILE | help\n")
        return 2
    goals, given = read_given(Path(argv[2]))
    problem = internal_problem(given)
    for name, value in [*given.items(), *((k, v) for k, v in os.environ.items() if k in DEFAULTS)]:
        problem = problem or control_problem(name, value)
    if problem:
        sys.stdout.write(_settings_error(problem))
        return 0
    for warning in misspelled(list(given)):
        sys.stderr.write(warning + "\n")
    try:
        p = plan({k: v for k, v in given.items() if k in DEFAULTS}, goals=goals)
    except UsageError as exc:
        sys.stdout.write(_settings_error(str(exc)))
        return 0
    if p.parallel_note and set(goals) & {"student", "sweep", "demo", "self-distill", "experiment-views",
                                         "experiment-pskd", "experiment-labels", "experiment-patient", "export"}:
        sys.stderr.write(p.parallel_note + "\n")
    sys.stdout.write(make_fragment(p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
