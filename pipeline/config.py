"""One typed, frozen config per stage: the only place defaults live.

Make variables become click options (``stages/``), click options become one of these,
and the code below the stage reads nothing else. Each config validates itself, so the
Python API refuses the same bad values as the CLI, and each is saved, resolved, into
the artifact it produced (checkpoint, cache attrs, metrics.json).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.cache import parse_combine
from pipeline.datasets import DEBIAN_DIR
from pipeline.errors import UsageError
from pipeline.models import list_students

__all__ = [
    "DataConfig", "TeacherConfig", "LogitsConfig", "EnsembleConfig", "PublishConfig", "StudentConfig",
    "ExportConfig", "EXPORT_FORMATS",
    "SweepConfig", "SWEEP_BACKENDS", "run_name", "SelfDistillConfig", "ViewsExperimentConfig",
    "resolve_device", "as_record", "from_options",
]

# What the teacher looks like on each kind of machine when the user says "auto".
TEACHER_AUTO = {"cuda": ("resnet18", 30), "cpu": ("cnn", 5)}


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; asking for a missing GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("DEVICE=cuda but no CUDA GPU is visible; use DEVICE=cpu or DEVICE=auto")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device '{name}'; use auto, cpu or cuda")
    return name


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{name} must be a positive number, got {value!r}")


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")


def from_options(cls, **options):
    """Build a config from CLI options, dropping unset (None) ones so the config's
    defaults stay the only defaults (timm's create_model does the same)."""
    return cls(**{k: v for k, v in options.items() if v is not None})


def as_record(cfg) -> dict:
    """The config as JSON/HDF5-friendly values (paths as strings, tuples as lists, None dropped)."""
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(cfg).items() if v is not None}


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to prepare, where to look for it, and where the prepared .npz goes."""

    out: Path
    dataset: str = "fashion-mnist"   # a known name, an .npz path, or a directory of IDX files
    source: Path | None = None       # explicit directory/file, searched first
    raw_dir: Path = Path("data/raw")
    system_dir: Path = DEBIAN_DIR    # where the Debian package dataset-fashion-mnist puts it
    limit: int = 0                   # keep only the first N training samples (0: all)
    download: bool = True            # last resort: the official files, MD5-checked

    def __post_init__(self):
        _at_least("LIMIT", self.limit, 0)


@dataclass(frozen=True)
class TeacherConfig:
    dataset: Path
    out_dir: Path
    arch: str = "auto"       # auto: resnet18 on a GPU, cnn on the CPU
    epochs: int = 0          # 0: auto, 30 on a GPU, 5 on the CPU
    device: str = "auto"
    seed: int = 0
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    augment: bool = True     # random crop (pad 2) + horizontal flip
    threads: int = 0         # torch CPU threads; 0 leaves torch's default

    def __post_init__(self):
        _at_least("TEACHER_EPOCHS", self.epochs, 0)
        _at_least("batch size", self.batch_size, 1)
        _positive("learning rate", self.lr)

    def resolved(self) -> "TeacherConfig":
        """Replace every 'auto' with what it means on this machine."""
        device = resolve_device(self.device)
        arch, epochs = TEACHER_AUTO[device]
        return dataclasses.replace(
            self, device=device,
            arch=arch if self.arch == "auto" else self.arch,
            epochs=self.epochs or epochs,
        )

    @property
    def amp(self) -> bool:
        """bf16 autocast on GPUs; CPUs train in float32."""
        return self.device == "cuda"


@dataclass(frozen=True)
class LogitsConfig:
    teacher: Path             # softcache checkpoint, TorchScript/.pt2 file, or "module:factory"
    dataset: Path             # the prepared dataset
    out: Path                 # the cache file
    temperature: float = 1.0  # TEACHER_T: logits are stored divided by it
    dtype: str = "float32"      # CACHE_DTYPE: float32 or float16
    topk: int = 0               # CACHE_TOPK: keep the k largest logits per row (0: all)
    device: str = "auto"
    batch_size: int = 1024
    chunk_rows: int = 4096      # rows per resumable chunk of the pass
    teacher_weights: Path | None = None   # TEACHER_WEIGHTS: state dict for a module:factory teacher
    views: int = 1              # VIEWS: augmented views cached per training image (1: the clean image only)
    view_seed: int = 0          # VIEW_SEED: draws the views' crops and flips
    mixup: float = 0.0          # MIXUP=a: every view is a mixup pair, lambda ~ Beta(a, a) (0: no mixup)

    def __post_init__(self):
        _positive("TEACHER_T", self.temperature)
        _at_least("VIEWS", self.views, 1)
        if not isinstance(self.mixup, (int, float)) or not math.isfinite(self.mixup) or self.mixup < 0:
            raise UsageError(f"MIXUP must be a number >= 0 (the Beta parameter; 0 turns mixup off), got {self.mixup!r}")
        if self.mixup and self.views < 2:
            raise UsageError("MIXUP needs cached views to mix: give VIEWS=K (K >= 2) with it")
        _at_least("VIEW_SEED", self.view_seed, 0)
        _at_least("batch size", self.batch_size, 1)
        _at_least("CACHE_TOPK", self.topk, 0)
        _at_least("chunk rows", self.chunk_rows, 1)
        if self.dtype not in ("float32", "float16"):
            raise UsageError(f"CACHE_DTYPE must be float32 or float16, got {self.dtype!r}")


@dataclass(frozen=True)
class EnsembleConfig:
    """Member caches (one per teacher, made by ``teacher-logits``) combined into one ensemble cache."""

    members: tuple[Path, ...]
    out: Path
    records: tuple[Path, ...] = ()   # each member's teacher.json; when given, member i must come from record i
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(Path(m) for m in self.members))
        object.__setattr__(self, "records", tuple(Path(r) for r in self.records))
        if len(self.members) < 2:
            raise UsageError(f"an ensemble needs at least 2 member caches, got {len(self.members)}; use TEACHERS=3")
        if len(set(self.members)) != len(self.members):
            raise UsageError("an ensemble lists the same member cache twice; give each member once")
        if self.records and len(self.records) != len(self.members):
            raise UsageError(f"{len(self.records)} teacher records for {len(self.members)} members; give one each")
        if self.dtype not in ("float32", "float16"):
            raise UsageError(f"CACHE_DTYPE must be float32 or float16, got {self.dtype!r}")


@dataclass(frozen=True)
class PublishConfig:
    """A finished cache copied to a float16 published cache, with how it was made."""

    cache: Path
    out: Path
    command: str                     # the command that made the source cache, for the record
    device: str                      # where the teacher ran, in words (e.g. "1x NVIDIA H100")
    records: tuple[Path, ...] = ()   # the teachers' teacher.json: their training time and device go in the record
    note: str = ""

    def __post_init__(self):
        object.__setattr__(self, "records", tuple(Path(r) for r in self.records))
        if not self.device.strip() or not self.command.strip():
            raise UsageError("publish needs --command (how the cache was made) and --device (where the teacher ran)")


@dataclass(frozen=True)
class StudentConfig:
    cache: Path
    dataset: Path
    out_dir: Path
    student: str = "cnn-tiny"
    T: float = 4.0
    alpha: float = 0.9             # weight of the soft term; 0 is plain cross-entropy
    seed: int = 0
    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    augment: bool = False          # random crop + flip; the soft target stays the clean image's
    replay: int = 0                # REPLAY=K: train on the first K cached views, each with its own logits
    holdout: int = 0               # HOLDOUT=N: train without N fixed rows and score them (val_acc)
    combine: str = "logits"        # COMBINE: an ensemble's targets: logits, probs (means) or a member number
    teacher_tag: str = ""          # names the teacher in distilled runs' names (Make's TEACHER_TAG, e.g. -e30-x3)
    teacher_record: Path | None = None   # teacher.json; when given, the cache must come from it
    threads: int = 0
    cache_memory_mb: int = 4096    # dense logits up to this size are held in memory, larger ones streamed

    def __post_init__(self):
        _positive("T", self.T)
        _at_least("REPLAY", self.replay, 0)
        _at_least("HOLDOUT", self.holdout, 0)
        object.__setattr__(self, "combine", str(parse_combine(self.combine)))
        if self.teacher_tag and not self.teacher_tag.startswith("-"):
            object.__setattr__(self, "teacher_tag", f"-{self.teacher_tag}")
        if self.replay and self.augment:
            raise UsageError("AUGMENT=1 with REPLAY>0 would re-augment the replayed views and break the match "
                             "with their logits; replayed views are already augmented, so drop AUGMENT")
        if not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"ALPHA must lie in [0, 1], got {self.alpha!r}")
        _at_least("EPOCHS", self.epochs, 1)
        _at_least("batch size", self.batch_size, 1)
        _positive("learning rate", self.lr)
        _at_least("cache memory (MB)", self.cache_memory_mb, 0)

    @property
    def inputs(self) -> str:
        """What the student sees, in words: the report's 'inputs' column."""
        return f"{self.replay} cached views" if self.replay else "crop+flip" if self.augment else "clean"

    @property
    def run_name(self) -> str:
        return run_name(self.student, self.T, self.alpha, self.seed, self.epochs, replay=self.replay,
                        augment=self.augment, holdout=self.holdout, teacher=self.teacher_tag, combine=self.combine)


def run_name(student: str, T: float, alpha: float, seed: int, epochs: int, *, replay: int = 0,
             augment: bool = False, holdout: int = 0, teacher: str = "", combine: str = "logits") -> str:
    """A run directory's name says what it is; the Makefile's ``run_name`` spells it the same way:
    ``-r8`` replays 8 cached views, ``-aug`` augments at random, ``-ho5000`` holds 5000 rows out.
    A distilled run also names a non-default teacher (``-from-e30-x3``) and ensemble targets other
    than the mean of logits (``-probs``, ``-m1``); scratch runs use no teacher, so they are shared."""
    combined = "" if combine == "logits" else f"-{combine}" if combine == "probs" else f"-m{combine}"
    source = f"-from{teacher}" if teacher else ""
    arm = "scratch" if alpha == 0 else f"T{T:g}-a{alpha:g}{source}{combined}"
    inputs = f"-r{replay}" if replay else "-aug" if augment else ""
    held = f"-ho{holdout}" if holdout else ""
    return f"{student}-{arm}{inputs}{held}-s{seed}-e{epochs}"


@dataclass(frozen=True)
class SelfDistillConfig:
    """Progressive self-knowledge distillation (PS-KD): no teacher, no teacher cache.

    The training recipe (epochs, batch size, learning rate, augmentation) defaults to the
    student stage's, so PS-KD and scratch/teacher-KD runs compare on the same schedule.
    """

    dataset: Path
    out_dir: Path
    student: str = "cnn-tiny"
    alpha_T: float = 0.8           # ALPHA_T: weight of the previous epoch's predictions at the last epoch
    seed: int = 0
    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    augment: bool = False
    threads: int = 0

    def __post_init__(self):
        if not isinstance(self.alpha_T, (int, float)) or not 0.0 < self.alpha_T <= 1.0:
            raise UsageError(f"ALPHA_T must lie in (0, 1], got {self.alpha_T!r}")
        if self.student not in list_students():
            raise UsageError(f"unknown student '{self.student}'; choose one of: {', '.join(list_students())}")
        _at_least("EPOCHS", self.epochs, 1)
        _at_least("batch size", self.batch_size, 1)
        _positive("learning rate", self.lr)

    @property
    def run_name(self) -> str:
        return f"{self.student}-pskd-a{self.alpha_T:g}-s{self.seed}-e{self.epochs}"


SWEEP_BACKENDS = ("joblib", "dask")


def _grid(name: str, values: tuple, check) -> tuple:
    """A grid is non-empty, has no value twice, and every value passes ``check``; the error names the value."""
    if not values:
        raise UsageError(f"{name} is empty; give at least one value")
    seen = set()
    for v in values:
        if v in seen:
            raise UsageError(f"{name} lists {v!r} twice; give each value once")
        seen.add(v)
        check(v)
    return tuple(values)


@dataclass(frozen=True)
class SweepConfig:
    """A grid of student runs over one cache: every (student, T, ALPHA, seed) combination.

    Runs with ALPHA=0 do not depend on T (plain cross-entropy), so they are planned once
    per student and seed. ``student`` carries everything else a run needs (cache, dataset,
    epochs, batch size, ...); its own student/T/alpha/seed/out_dir are replaced per run.
    """

    student: StudentConfig
    runs_dir: Path
    reports_dir: Path
    students: tuple[str, ...] = ("cnn-tiny",)
    Ts: tuple[float, ...] = (4.0,)
    alphas: tuple[float, ...] = (0.0, 0.9)
    seeds: tuple[int, ...] = (0,)
    jobs: int = 1
    threads: int = 0                 # per run; 0: cores / jobs (at least 1) so runs never oversubscribe
    backend: str = "joblib"          # joblib: local processes; dask: a Dask distributed cluster
    scheduler: str | None = None     # dask scheduler address (tcp://host:8786)

    def __post_init__(self):
        def known_student(name):
            if name not in list_students():
                raise UsageError(f"STUDENTS: unknown student '{name}'; choose from: {', '.join(list_students())}")

        def temperature(v):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise UsageError(f"TS: {v!r} is not a positive temperature")

        def alpha(v):
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise UsageError(f"ALPHAS: {v!r} lies outside [0, 1]")

        def seed(v):
            if not isinstance(v, int) or v < 0:
                raise UsageError(f"SEEDS: {v!r} is not a non-negative integer")

        _grid("STUDENTS", self.students, known_student)
        _grid("TS", self.Ts, temperature)
        _grid("ALPHAS", self.alphas, alpha)
        _grid("SEEDS", self.seeds, seed)
        _at_least("JOBS", self.jobs, 1)
        _at_least("THREADS", self.threads, 0)
        if self.backend not in SWEEP_BACKENDS:
            raise UsageError(f"SWEEP_BACKEND must be one of {', '.join(SWEEP_BACKENDS)}, got {self.backend!r}")
        if self.backend == "dask" and not self.scheduler:
            raise UsageError("SWEEP_BACKEND=dask needs SCHEDULER=tcp://host:port (a running dask scheduler)")

    def runs(self) -> list[StudentConfig]:
        """One StudentConfig per planned run, in grid order, scratch runs once per student and seed."""
        threads = self.threads or max(1, (os.cpu_count() or 1) // self.jobs)
        planned: dict[str, StudentConfig] = {}
        for student in self.students:
            for seed in self.seeds:
                for alpha in self.alphas:
                    for T in (self.Ts if alpha != 0 else self.Ts[:1]):
                        run = dataclasses.replace(self.student, student=student, T=float(T), alpha=float(alpha),
                                                  seed=seed, threads=threads)
                        planned[run.run_name] = dataclasses.replace(run, out_dir=self.runs_dir / run.run_name)
        return list(planned.values())


@dataclass(frozen=True)
class ViewsExperimentConfig:
    """The cached-views experiment: scratch vs clean-target KD vs replayed-view KD.

    ``student`` carries what every run shares (cache, dataset, epochs, batch size, ...).
    The KD arms' T and ALPHA are chosen from ``Ts`` x ``alphas`` by held-out accuracy
    (``holdout`` training rows, ``tune_seeds``); then every arm is trained on the whole
    training split with ``seeds`` and its test accuracy reported once.
    """

    student: StudentConfig
    runs_dir: Path
    tuning_dir: Path
    reports_dir: Path
    students: tuple[str, ...] = ("cnn-tiny",)
    Ts: tuple[float, ...] = (1.0, 2.0, 4.0)
    alphas: tuple[float, ...] = (0.5, 0.9)
    seeds: tuple[int, ...] = (0, 1, 2)
    tune_seeds: tuple[int, ...] = (0,)
    holdout: int = 5000
    replay: int = 0                  # views replayed; 0: every view in the cache
    jobs: int = 1
    threads: int = 0

    def __post_init__(self):
        # The grids are checked exactly as a sweep checks them (scratch-free KD grids).
        SweepConfig(student=self.student, runs_dir=self.runs_dir, reports_dir=self.reports_dir,
                    students=self.students, Ts=self.Ts, alphas=self.alphas, seeds=self.seeds,
                    jobs=self.jobs, threads=self.threads)
        _grid("TUNE_SEEDS", self.tune_seeds, lambda v: _at_least("TUNE_SEEDS", v, 0))
        object.__setattr__(self, "alphas", tuple(a for a in self.alphas if a != 0))   # scratch always runs
        if not self.alphas:
            raise UsageError("ALPHAS has no value above 0 for the KD arms to choose from; give e.g. ALPHAS=\"0.5 0.9\"")
        _at_least("HOLDOUT", self.holdout, 1)
        _at_least("REPLAY", self.replay, 0)

    @property
    def run_count(self) -> int:
        """Tuning runs (scratch + both KD arms over the grid) and final runs (three arms), all students."""
        per_seed = 1 + 2 * len(self.Ts) * len(self.alphas)
        return len(self.students) * (len(self.tune_seeds) * per_seed + 3 * len(self.seeds))

    def run(self, student: str, seed: int, *, T: float = 1.0, alpha: float = 0.0, replay: int = 0,
            tuning: bool = False) -> StudentConfig:
        """One run of the experiment: random crop+flip unless it replays cached views."""
        threads = self.threads or max(1, (os.cpu_count() or 1) // self.jobs)
        cfg = dataclasses.replace(self.student, student=student, seed=seed, T=float(T), alpha=float(alpha),
                                  replay=replay, augment=not replay, holdout=self.holdout if tuning else 0,
                                  threads=threads)
        return dataclasses.replace(cfg, out_dir=(self.tuning_dir if tuning else self.runs_dir) / cfg.run_name)


EXPORT_FORMATS = ("onnx", "torchscript", "int8")


@dataclass(frozen=True)
class ExportConfig:
    """What to export from a finished student run, and how strict the checks are."""

    run_dir: Path
    out_dir: Path | None = None       # default: <run_dir>/export
    dataset: Path | None = None       # default: the dataset the run was trained on
    formats: tuple[str, ...] = EXPORT_FORMATS
    parity_atol: float = 1e-4         # max |ONNX or TorchScript logit - eager logit| on the test set
    int8_max_drop_pp: float = 0.5     # refuse an int8 model that loses more test accuracy than this
    calibration_rows: int = 1024      # training images used to calibrate int8 activation ranges
    threads: int = 0

    def __post_init__(self):
        formats = tuple(self.formats)
        unknown = [f for f in formats if f not in EXPORT_FORMATS]
        if unknown or not formats:
            raise UsageError(f"unknown export format {', '.join(map(repr, unknown)) or '(none given)'}; "
                             f"choose from: {', '.join(EXPORT_FORMATS)}")
        if "int8" in formats and "onnx" not in formats:
            formats = ("onnx",) + formats   # the int8 model is quantised from the ONNX graph
        object.__setattr__(self, "formats", tuple(dict.fromkeys(formats)))
        _positive("parity tolerance", self.parity_atol)
        _positive("int8 accuracy budget (pp)", self.int8_max_drop_pp)
        _at_least("calibration rows", self.calibration_rows, 1)

    @property
    def destination(self) -> Path:
        return self.out_dir if self.out_dir is not None else self.run_dir / "export"
