"""One typed, frozen config per stage, and nothing else: no planning, no names.

Make variables become click options (``stages/``), click options become one of these,
and the code below the stage reads nothing else. The defaults of every user-facing
setting come from the one table in ``pipeline.settings`` (which ``make help`` prints), and
so does every check of a single setting, so Make, the CLI and the Python API refuse the
same values with the same words. Each config validates itself in ``__post_init__`` and
is saved, resolved, into the artifact it produced (checkpoint, cache attrs, metrics.json).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.data.image_folder import FolderOptions
from pipeline.data.prepare import DEBIAN_DIR
from pipeline.errors import UsageError
from pipeline.models import check_student_spec
from pipeline.names import SELF_METHOD_KNOBS, run_data, run_name, self_run_name
from pipeline.settings import (
    check,
    check_augment_replay,
    check_grid,
    check_labels_alpha,
    check_sweep_backend,
    check_views_mixup,
    default,
    image_size,
)

__all__ = [
    "DataConfig", "TeacherConfig", "LMTeacherConfig", "LMStudentConfig", "LMExperimentConfig", "TokenLogitsConfig", "LogitsConfig", "EnsembleConfig", "PublishConfig", "StudentConfig",
    "ExportConfig",
    "SweepConfig", "SWEEP_BACKENDS", "SelfDistillConfig", "ViewsExperimentConfig", "LabelsExperimentConfig",
    "PatientExperimentConfig", "SelfKDExperimentConfig",
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
    """Internal knobs with no Make variable (learning rate, tolerances)."""
    if not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise UsageError(f"{name} must be a positive number, got {value!r}")


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")


def _known_student(name: str, setting: str = "STUDENT") -> None:
    check_student_spec(name, "image", setting)


def _check_grids(students, Ts, alphas, seeds) -> None:
    """The (student, T, ALPHA, seed) grid of a sweep or an experiment."""
    check_grid("STUDENTS", students, check_one=lambda v: _known_student(v, "STUDENTS"))
    check_grid("TS", Ts, "T"), check_grid("ALPHAS", alphas, "ALPHA"), check_grid("SEEDS", seeds, "SEED")


def _check_tuned_experiment(cfg, arm: str) -> None:
    """What an experiment that tunes T and ALPHA on held-out rows checks: its grids and tuning seeds, ALPHA values
    above 0 for ``arm`` (scratch always runs, so 0 is dropped), held-out rows, jobs and threads."""
    _check_grids(cfg.students, cfg.Ts, cfg.alphas, cfg.seeds)
    check_grid("TUNE_SEEDS", cfg.tune_seeds, "SEED")
    object.__setattr__(cfg, "alphas", tuple(a for a in cfg.alphas if a != 0))
    if not cfg.alphas:
        raise UsageError(f"ALPHAS has no value above 0 for {arm} to choose from; give e.g. ALPHAS=0.5")
    check("EXPERIMENT_HOLDOUT", cfg.holdout), check("JOBS", cfg.jobs), check("THREADS", cfg.threads)


def setting(name: str, kind=str, *, value=dataclasses.MISSING, parse: bool = True):
    """A config field that carries the setting ``name``: its default is the table's (or ``value``, for a
    grid built from it), and the field remembers its setting, so ``stages.options.config_options`` gives
    its command-line option the table's help, type and check. ``parse=False``: paths, any name the
    system takes."""
    return dataclasses.field(default=default(name, kind) if value is dataclasses.MISSING else value,
                             metadata={"setting": name, "parse": parse})


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

    out: Path   # prepared file to write: .npz, or .h5 (images or text read a batch at a time)
    dataset: str = setting("DATASET", parse=False)   # a known name, an .npz path, or a directory of IDX files
    source: Path | None = setting("SOURCE", value=None, parse=False)   # searched first
    raw_dir: Path = Path("data/raw")   # where user-supplied or downloaded IDX files live
    system_dir: Path = DEBIAN_DIR    # where the Debian package dataset-fashion-mnist puts it
    limit: int = setting("LIMIT", int)   # keep only the first N training samples (0: all)
    download: bool = True            # last resort: the official files, MD5-checked
    layout: str = setting("LAYOUT")   # image axes of an .npz: auto, nchw or nhwc
    # image folders only (pipeline.data.image_folder): what becomes of each file
    image_size: str = setting("IMAGE_SIZE")   # '' (own size), 'S' or 'HxW'
    channels: str = setting("CHANNELS")   # auto, 1 or 3
    bad_images: str = setting("BAD_IMAGES")   # fail or skip
    test_fraction: float = setting("TEST_FRACTION", float)
    split_seed: int = setting("SPLIT_SEED", int)   # also draws a text corpus's splits
    tokenizer: str = setting("TOKENIZER", value="")   # "" for images

    def __post_init__(self):
        for name in ("LIMIT", "LAYOUT", "IMAGE_SIZE", "CHANNELS", "BAD_IMAGES", "TEST_FRACTION", "SPLIT_SEED"):
            check(name, getattr(self, name.lower()))

    def folder_options(self) -> FolderOptions:
        return FolderOptions(image_size(self.image_size), None if self.channels == "auto" else int(self.channels),
                             self.bad_images, self.test_fraction, self.split_seed)


@dataclass(frozen=True)
class TeacherConfig:
    dataset: Path   # the prepared dataset (.npz, or .h5 for an image folder)
    out_dir: Path   # writes teacher.pt and teacher.json
    arch: str = setting("TEACHER")   # auto: resnet18 on a GPU, cnn on the CPU
    epochs: int = setting("TEACHER_EPOCHS", int)   # 0: auto, 30 on a GPU, 5 on the CPU
    device: str = setting("DEVICE")
    seed: int = setting("TEACHER_SEED", int)
    batch_size: int = 128   # images per training step
    lr: float = 3e-3   # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4   # AdamW's weight decay
    augment: bool = True     # random crop (pad 2) + horizontal flip
    threads: int = setting("THREADS", int)   # torch CPU threads; 0 leaves torch's default
    tensorboard_dir: Path | None = None   # LOG=tensorboard: per-epoch scalars under <dir>/teacher-<out_dir name>

    def __post_init__(self):
        check("TEACHER_EPOCHS", self.epochs)
        check("TEACHER_SEED", self.seed)
        check("DEVICE", self.device)
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
class LMTeacherConfig:
    """A causal language model trained on a prepared text file (``pipeline.data.windows``) to teach LM
    students: counted in steps, scored in bits per byte on the validation split every ``eval_every``
    steps, its whole state saved then, so a killed run resumes to the same weights."""

    text: Path                       # the prepared text file (.h5)
    out_dir: Path   # writes teacher.pt and teacher.json
    arch: str = "lm-teacher"         # a registered language model (pipeline.models)
    context: int = setting("CONTEXT", int)   # tokens a window feeds the model; it predicts each one's next
    steps: int = setting("TEACHER_STEPS", int)
    batch_size: int = 32             # windows per step
    lr: float = 1e-3   # peak learning rate of the one-cycle schedule
    weight_decay: float = 0.1   # AdamW's weight decay
    seed: int = setting("TEACHER_SEED", int)
    device: str = setting("DEVICE")
    threads: int = setting("THREADS", int)
    eval_every: int = 250            # steps between validation scores (and saved states)
    eval_windows: int = 256          # validation windows scored each time (0: all); the final score uses all

    def __post_init__(self):
        check("TEACHER_SEED", self.seed), check("DEVICE", self.device), check("THREADS", self.threads)
        for name, value in (("context", self.context), ("steps", self.steps), ("batch size", self.batch_size),
                            ("eval_every", self.eval_every)):
            _at_least(name, value, 1)
        _positive("learning rate", self.lr)

    def resolved(self) -> "LMTeacherConfig":
        return dataclasses.replace(self, device=resolve_device(self.device))


@dataclass(frozen=True)
class LMStudentConfig:
    """A causal LM student trained on a prepared text file's train windows against a per-token cache of its
    teacher (the same windows the cache was made from), counted in steps like the LM teacher."""

    cache: Path                      # the per-token cache (.h5)
    text: Path                       # the prepared text file the cache was made from
    out_dir: Path                    # the run directory to write
    student: str = "lm-small"        # lm-tiny/-small/-medium, a preset (hf-llama-small, ...), hf:<config>, module:factory
    T: float = setting("T", float)
    alpha: float = setting("ALPHA", float)
    seed: int = setting("SEED", int)
    steps: int = setting("STEPS", int)
    batch_size: int = 32             # windows per step
    lr: float = 3e-3                 # peak learning rate of the one-cycle schedule
    weight_decay: float = 0.1        # AdamW's weight decay
    threads: int = setting("THREADS", int)
    eval_every: int = 200            # steps between validation scores and saved states
    eval_windows: int = 128          # validation windows each score reads, spread over the split (0: all)
    topk: int = 0                    # read only the cache's k most likely tokens, the rest in the tail (0: all)
    self_alpha_T: float = 0.0        # PS-KD (METHOD=pskd): the student's own state at the last evaluation teaches (0: off)
    cache_memory_mb: int = 4096      # hold the cache's targets in memory up to this size, else read them from the file
    tensorboard_dir: Path | None = None   # LOG=tensorboard: each evaluation's figures under <dir>/<run name>

    def __post_init__(self):
        check("T", self.T), check("ALPHA", self.alpha), check("SEED", self.seed), check("THREADS", self.threads)
        check_student_spec(self.student, "text")
        _at_least("topk", self.topk, 0)
        if self.self_alpha_T:
            check("ALPHA_T", self.self_alpha_T)
            if self.alpha:
                raise UsageError("PS-KD teaches a language model with its own earlier predictions, not the teacher's "
                                 "cache: give ALPHA=0 with METHOD=pskd")
        for name, value in (("steps", self.steps), ("batch size", self.batch_size), ("eval_every", self.eval_every)):
            _at_least(name, value, 1)
        _positive("learning rate", self.lr)


@dataclass(frozen=True)
class LMExperimentConfig:
    """What distillation buys LM students: T and ALPHA chosen per student on the validation split (tuning
    seeds), then scratch and distilled at equal steps over every seed, for each student; and the price of
    sparsity: the first student distilled from the cache read at each k of ``topks``."""

    student: LMStudentConfig         # what every run shares (cache, text, steps, batch, lr); its own fields vary
    runs_dir: Path                   # where the final runs go
    tuning_dir: Path                 # where the tuning runs go (scored on validation, kept out of the report)
    reports_dir: Path                # where lm-experiment.md/.json/.png go
    students: tuple[str, ...] = ("lm-tiny", "lm-small")   # students compared, each scratch against distilled
    Ts: tuple[float, ...] = (1.0, 2.0, 4.0)   # temperatures to choose from (each on the cache's grid)
    alphas: tuple[float, ...] = (0.5, 0.9)   # ALPHA values to choose from, > 0
    seeds: tuple[int, ...] = (0, 1, 2)   # seeds of the final runs
    tune_seeds: tuple[int, ...] = (0,)   # seeds of the tuning runs
    topks: tuple[int, ...] = (1, 4, 16, 64)   # k read from the cache for the sparsity arm (each <= the cache's)
    jobs: int = setting("JOBS", int)
    threads: int = setting("THREADS", int)

    def __post_init__(self):
        check_grid("STUDENTS", self.students, check_one=lambda v: check_student_spec(v, "text", "STUDENTS")), check_grid("TS", self.Ts, "T"), check_grid("ALPHAS", self.alphas, "ALPHA")
        check_grid("SEEDS", self.seeds, "SEED"), check_grid("SEEDS", self.tune_seeds, "SEED")
        if 0 in self.alphas:
            raise UsageError("the ALPHA values to choose from must be > 0 (scratch, ALPHA=0, is always run)")


@dataclass(frozen=True)
class TokenLogitsConfig:
    """The per-token teacher pass: a causal LM teacher over every window of a prepared text file, its
    top-k and exact tail at each grid temperature written to one cache (``pipeline.cache.lm_format``)."""

    teacher: Path                    # an LM teacher checkpoint (pipeline.teacher.lm_fit)
    text: Path                       # the prepared text file it reads
    out: Path   # the per-token cache (.h5) to write
    context: int = 0                 # tokens per window; 0: the teacher's own context
    topk: int = 16                   # 0: every logit (dense; only for small vocabularies)
    dtype: str = "float16"           # storage of the kept logits
    temperatures: tuple[float, ...] = setting("CACHE_TS", value=tuple(float(t) for t in default("CACHE_TS").split()))
    batch_size: int = 32             # windows per teacher forward
    chunk_windows: int = 256         # windows per resumable chunk of the pass
    device: str = setting("DEVICE")
    threads: int = setting("THREADS", int)

    def __post_init__(self):
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        check_grid("CACHE_TS", self.temperatures, "T")
        check("CACHE_DTYPE", self.dtype), check("DEVICE", self.device), check("THREADS", self.threads)
        for name, value in (("batch size", self.batch_size), ("chunk windows", self.chunk_windows)):
            _at_least(name, value, 1)
        _at_least("context", self.context, 0), _at_least("CACHE_TOPK", self.topk, 0)


@dataclass(frozen=True)
class LogitsConfig:
    teacher: Path             # softcache checkpoint, TorchScript/.pt2 file, or "module:factory"
    dataset: Path             # the prepared dataset
    out: Path                 # the cache file
    temperature: float = setting("TEACHER_T", float)   # logits are stored divided by it
    dtype: str = setting("CACHE_DTYPE")   # float32 or float16
    topk: int = setting("CACHE_TOPK", int)   # keep the k largest logits per row (0: all)
    device: str = setting("DEVICE")
    batch_size: int = 0         # rows per forward; 0: the device's (pipeline.training.loop.inference_batch)
    chunk_rows: int = 4096      # rows per resumable chunk of the pass
    teacher_weights: Path | None = setting("TEACHER_WEIGHTS", value=None, parse=False)
    views: int = setting("VIEWS", int)   # augmented views cached per training image (1: clean only)
    view_seed: int = setting("VIEW_SEED", int)   # draws the views' crops and flips
    mixup: float = setting("MIXUP", float)   # MIXUP=a: every view is a mixup pair, lambda ~ Beta(a, a) (0: no mixup)
    transfer: Path | None = setting("TRANSFER", value=None, parse=False)   # scored after the train rows
    temperatures: tuple[float, ...] = setting("CACHE_TS", value=tuple(float(t) for t in default("CACHE_TS").split()))

    def __post_init__(self):
        for name, value in (("TEACHER_T", self.temperature), ("VIEWS", self.views), ("MIXUP", self.mixup),
                            ("VIEW_SEED", self.view_seed), ("CACHE_TOPK", self.topk), ("CACHE_DTYPE", self.dtype),
                            ("DEVICE", self.device)):
            check(name, value)
        check_views_mixup(self.views, self.mixup)
        _at_least("batch size", self.batch_size, 0)
        _at_least("chunk rows", self.chunk_rows, 1)


@dataclass(frozen=True)
class EnsembleConfig:
    """Member caches (one per teacher, made by ``teacher-logits``) combined into one ensemble cache."""

    members: tuple[Path, ...]   # a member's cache (.h5, every logit stored); one per member, at least 2
    out: Path   # the ensemble cache (.h5) to write
    records: tuple[Path, ...] = ()   # each member's teacher.json; when given, member i must come from record i
    dtype: str = setting("CACHE_DTYPE")

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(Path(m) for m in self.members))
        object.__setattr__(self, "records", tuple(Path(r) for r in self.records))
        if len(self.members) < 2:
            raise UsageError(f"an ensemble needs at least 2 member caches, got {len(self.members)}; use TEACHERS=3")
        if len(set(self.members)) != len(self.members):
            raise UsageError("an ensemble lists the same member cache twice; give each member once")
        if self.records and len(self.records) != len(self.members):
            raise UsageError(f"{len(self.records)} teacher records for {len(self.members)} members; give one each")
        check("CACHE_DTYPE", self.dtype)


@dataclass(frozen=True)
class PublishConfig:
    """A finished cache copied to a float16 published cache, with how it was made."""

    cache: Path   # the finished cache to publish
    out: Path   # the published cache (.h5); its record goes beside it (.json)
    command: str                     # the command that made the source cache, for the record
    device: str                      # where the teacher ran, in words (e.g. "1x NVIDIA H100")
    records: tuple[Path, ...] = ()   # the teachers' teacher.json: their training time and device go in the record
    note: str = ""   # anything else a user should know about this cache
    replace: str = setting("REPUBLISH")   # the name (stem) of an existing published cache this may replace

    def __post_init__(self):
        object.__setattr__(self, "records", tuple(Path(r) for r in self.records))
        if not self.device.strip() or not self.command.strip():
            raise UsageError("publish needs --command (how the cache was made) and --device (where the teacher ran)")


@dataclass(frozen=True)
class StudentConfig:
    cache: Path   # the teacher-logit cache (.h5)
    dataset: Path   # the prepared dataset (.npz, or .h5 for an image folder)
    out_dir: Path   # the run directory to write
    student: str = setting("STUDENT")
    T: float = setting("T", float)
    alpha: float = setting("ALPHA", float)   # weight of the soft term; 0 is plain cross-entropy
    seed: int = setting("SEED", int)
    epochs: int = setting("EPOCHS", int)
    batch_size: int = 128   # images per training step
    lr: float = 3e-3   # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4   # AdamW's weight decay
    augment: bool = setting("AUGMENT", bool)   # random crop + flip; the soft target stays the clean image's
    replay: int = setting("REPLAY", int)   # REPLAY=K: train on the first K cached views, each with its own logits
    holdout: int = setting("HOLDOUT", int)   # HOLDOUT=N: train without N fixed rows and score them (val_acc)
    labels: int | None = None      # LABELS=N: hard labels on N class-balanced rows only (None: every row's)
    transfer: Path | None = setting("TRANSFER", value=None, parse=False)   # the cache's (soft term only)
    combine: str = setting("COMBINE")   # COMBINE: an ensemble's targets: logits, probs (means) or a member number
    teacher_tag: str = ""          # names the teacher in distilled runs' names (Make's TEACHER_TAG, e.g. -e30-x3)
    teacher_record: Path | None = None   # teacher.json; when given, the cache must come from it
    threads: int = setting("THREADS", int)
    cache_memory_mb: int = 4096    # dense logits up to this size are held in memory, larger ones streamed
    trust_undigested_cache: bool = False   # accept a cache without digests: its values then prove nothing
    tensorboard_dir: Path | None = None   # LOG=tensorboard: per-epoch scalars under <dir>/<run name>
    checkpoint_every: int = setting("CHECKPOINT_EVERY", int)   # save the training state every N epochs
    checkpoint_minutes: float = setting("CHECKPOINT_MINUTES", float)   # ... or after this many minutes (0: off)

    def __post_init__(self):
        _known_student(self.student)
        for name, value in (("T", self.T), ("ALPHA", self.alpha), ("SEED", self.seed), ("EPOCHS", self.epochs),
                            ("REPLAY", self.replay), ("HOLDOUT", self.holdout), ("THREADS", self.threads),
                            ("CHECKPOINT_EVERY", self.checkpoint_every),
                            ("CHECKPOINT_MINUTES", self.checkpoint_minutes)):
            check(name, value)
        if self.labels is not None:
            check("LABELS", self.labels), check_labels_alpha(self.labels, self.alpha)
        object.__setattr__(self, "combine", check("COMBINE", str(self.combine).strip()))
        if self.teacher_tag and not self.teacher_tag.startswith("-"):
            object.__setattr__(self, "teacher_tag", f"-{self.teacher_tag}")
        check_augment_replay(self.augment, self.replay)
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
                        augment=self.augment, holdout=self.holdout, teacher=self.teacher_tag, combine=self.combine,
                        data=run_data(self.dataset), labels=self.labels,
                        transfer=Path(self.transfer).stem if self.transfer else "")


@dataclass(frozen=True)
class SelfDistillConfig:
    """Self-distillation with no teacher and no cache: ``method`` is PS-KD (the previous epoch teaches),
    BYOT (branches on the student's own stages, dropped before deployment) or CS-KD (another image of the
    same class teaches); ``pipeline.student.self_distill`` says what each optimises.

    The training recipe (epochs, batch size, learning rate, augmentation, labels, held-out rows) is the
    student stage's, so these runs and scratch/teacher-KD runs compare on the same schedule.
    """

    dataset: Path   # the prepared dataset (.npz, or .h5 for an image folder)
    out_dir: Path   # the run directory to write
    student: str = setting("STUDENT")
    method: str = setting("METHOD")
    alpha_T: float = setting("ALPHA_T", float)   # PS-KD: weight of the previous epoch's predictions at the last epoch
    byot_alpha: float = setting("BYOT_ALPHA", float)   # BYOT: soft-target weight on each branch
    byot_beta: float = setting("BYOT_BETA", float)     # BYOT: feature-hint weight
    byot_T: float = setting("BYOT_T", float)           # BYOT: temperature of the branches' soft targets
    cskd_lambda: float = setting("CSKD_LAMBDA", float)  # CS-KD: weight of the same-class partner's soft targets
    cskd_T: float = setting("CSKD_T", float)             # CS-KD: temperature
    seed: int = setting("SEED", int)
    epochs: int = setting("EPOCHS", int)
    batch_size: int = 128   # images per training step
    lr: float = 3e-3   # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4   # AdamW's weight decay
    augment: bool = setting("AUGMENT", bool)
    holdout: int = setting("HOLDOUT", int)   # train without N fixed rows and score them (val_acc)
    labels: int | None = None      # LABELS=N: train on N class-balanced labelled rows only (None: every row)
    threads: int = setting("THREADS", int)
    tensorboard_dir: Path | None = None   # LOG=tensorboard: per-epoch scalars under <dir>/<run name>

    def __post_init__(self):
        for name, value in (("METHOD", self.method), ("ALPHA_T", self.alpha_T), ("BYOT_ALPHA", self.byot_alpha),
                            ("BYOT_BETA", self.byot_beta), ("BYOT_T", self.byot_T),
                            ("CSKD_LAMBDA", self.cskd_lambda), ("CSKD_T", self.cskd_T), ("SEED", self.seed),
                            ("EPOCHS", self.epochs), ("HOLDOUT", self.holdout)):
            check(name, value)
        _known_student(self.student)
        if self.labels is not None:
            check("LABELS", self.labels)
            if self.labels == 0:
                raise UsageError("self-distillation needs hard labels: LABELS=0 leaves none (give LABELS=N > 0, "
                                 "or distil from a teacher's cache with 'make student')")
        _at_least("batch size", self.batch_size, 1)
        _positive("learning rate", self.lr)

    @property
    def knobs(self) -> dict[str, float]:
        """The method's own settings, as its run name and report spell them."""
        field_of = {f.metadata.get("setting"): f.name for f in dataclasses.fields(self)}
        return {key: float(getattr(self, field_of[name])) for key, _, name in SELF_METHOD_KNOBS[self.method]}

    @property
    def run_name(self) -> str:
        return self_run_name(self.student, self.method, self.knobs, self.seed, self.epochs, run_data(self.dataset),
                             labels=self.labels, holdout=self.holdout)


SWEEP_BACKENDS = ("joblib", "dask")


@dataclass(frozen=True)
class SweepConfig:
    """A grid of student runs over one cache: every (student, T, ALPHA, seed) combination
    (``pipeline.experiments.sweep.plan_sweep`` lists them). ``student`` carries everything else a run
    needs (cache, dataset, epochs, batch size, ...)."""

    student: StudentConfig
    runs_dir: Path   # where the run directories go
    reports_dir: Path   # where the reports go
    students: tuple[str, ...] = setting("STUDENTS", value=(default("STUDENT"),))
    Ts: tuple[float, ...] = setting("TS", value=(default("T", float),))
    alphas: tuple[float, ...] = setting("ALPHAS", value=(0.0, default("ALPHA", float)))
    seeds: tuple[int, ...] = setting("SEEDS", value=(default("SEED", int),))
    jobs: int = setting("JOBS", int)
    threads: int = setting("THREADS", int)   # per run; 0: cores / jobs (at least 1) so runs never oversubscribe
    backend: str = setting("SWEEP_BACKEND")   # joblib: local processes; dask: a Dask distributed cluster
    scheduler: str | None = setting("SCHEDULER", value=None)

    def __post_init__(self):
        _check_grids(self.students, self.Ts, self.alphas, self.seeds)
        check("JOBS", self.jobs), check("THREADS", self.threads)
        check("SWEEP_BACKEND", self.backend)
        check_sweep_backend(self.backend, self.scheduler)


@dataclass(frozen=True)
class ViewsExperimentConfig:
    """The cached-views experiment: scratch vs clean-target KD vs replayed-view KD
    (``pipeline.experiments.views`` plans and runs it). ``student`` carries what every run shares
    (cache, dataset, epochs, batch size, ...). The KD arms' T and ALPHA are chosen from
    ``Ts`` x ``alphas`` by held-out accuracy (``holdout`` training rows, ``tune_seeds``)."""

    student: StudentConfig
    runs_dir: Path   # where the run directories go
    tuning_dir: Path   # where the held-out tuning runs go (kept out of the report)
    reports_dir: Path   # where the reports go
    students: tuple[str, ...] = (default("STUDENT"),)   # students trained in every arm
    Ts: tuple[float, ...] = (1.0, 2.0, 4.0)   # temperatures to choose from on held-out rows
    alphas: tuple[float, ...] = (0.5, 0.9)   # ALPHA values to choose from, > 0
    seeds: tuple[int, ...] = (0, 1, 2)   # seeds of the final runs
    tune_seeds: tuple[int, ...] = (0,)   # seeds of the held-out tuning runs
    holdout: int = setting("EXPERIMENT_HOLDOUT", int)
    replay: int = setting("REPLAY", int)   # views replayed; 0: every view in the cache
    jobs: int = setting("JOBS", int)
    threads: int = setting("THREADS", int)

    def __post_init__(self):
        _check_grids(self.students, self.Ts, self.alphas, self.seeds)
        check_grid("TUNE_SEEDS", self.tune_seeds, "SEED")
        object.__setattr__(self, "alphas", tuple(a for a in self.alphas if a != 0))   # scratch always runs
        if not self.alphas:
            raise UsageError("ALPHAS has no value above 0 for the KD arms to choose from; give e.g. ALPHAS=\"0.5 0.9\"")
        check("EXPERIMENT_HOLDOUT", self.holdout), check("REPLAY", self.replay)
        check("JOBS", self.jobs), check("THREADS", self.threads)


@dataclass(frozen=True)
class LabelsExperimentConfig:
    """The few-labels experiment (``pipeline.experiments.labels`` plans and runs it): for every label count
    (None: all), scratch on those labels against distilled on those labels plus soft targets elsewhere.
    ``student`` carries what every run shares (cache, dataset, epochs, batch size, ...)."""

    student: StudentConfig
    runs_dir: Path   # where the run directories go
    tuning_dir: Path   # where the held-out tuning runs go (kept out of the report)
    reports_dir: Path   # where the reports go
    students: tuple[str, ...] = (default("STUDENT"),)   # students trained in every arm
    label_counts: tuple[int | None, ...] = (600, 1200, 6000, None)
    Ts: tuple[float, ...] = (1.0, 4.0)   # temperatures to choose from on held-out rows
    alphas: tuple[float, ...] = (0.5,)   # ALPHA values to choose from, > 0
    seeds: tuple[int, ...] = (0, 1, 2)   # seeds of the final runs
    tune_seeds: tuple[int, ...] = (0,)   # seeds of the held-out tuning runs
    holdout: int = setting("EXPERIMENT_HOLDOUT", int)
    jobs: int = setting("JOBS", int)
    threads: int = setting("THREADS", int)

    def __post_init__(self):
        _check_tuned_experiment(self, "the distilled arm")
        check_grid("LABELS", ["all" if n is None else n for n in self.label_counts], "LABELS")


@dataclass(frozen=True)
class SelfKDExperimentConfig:
    """The self-distillation experiment (``pipeline.experiments.selfkd`` plans and runs it): scratch, PS-KD,
    BYOT, CS-KD and the cached teacher's KD, per student, at full labels and on ``few_labels`` rows; each
    method's setting chosen on held-out rows. ``student`` carries what every run shares (cache, dataset,
    epochs, augmentation, ...)."""

    student: StudentConfig
    runs_dir: Path   # where the run directories go
    tuning_dir: Path   # where the held-out tuning runs go (kept out of the report)
    reports_dir: Path   # where the reports go
    students: tuple[str, ...] = ("cnn-tiny", "cnn-small")   # students trained in every arm (BYOT needs stages)
    few_labels: int = setting("DEMO_LABELS", int)   # the few-label setting: hard labels on this many rows
    few_epochs: int = 100   # epochs of the teacher-free arms on the few labelled rows (as many steps as ~2 full epochs)
    Ts: tuple[float, ...] = (1.0, 4.0)   # the cached-teacher arm's temperatures, chosen on held-out rows
    alphas: tuple[float, ...] = (0.5, 0.9)   # the cached-teacher arm's ALPHA values, > 0
    seeds: tuple[int, ...] = (0, 1, 2)   # seeds of the final runs
    tune_seeds: tuple[int, ...] = (0,)   # seeds of the held-out tuning runs
    holdout: int = setting("EXPERIMENT_HOLDOUT", int)
    jobs: int = setting("JOBS", int)
    threads: int = setting("THREADS", int)

    def __post_init__(self):
        _check_tuned_experiment(self, "the cached-teacher arm")
        check("DEMO_LABELS", self.few_labels), check("EPOCHS", self.few_epochs)
        if self.few_labels < 1:
            raise UsageError("the few-label setting needs at least one labelled row; give DEMO_LABELS=N > 0")


@dataclass(frozen=True)
class PatientExperimentConfig:
    """The patient experiment (``pipeline.experiments.patient`` plans and runs it): scratch, clean-target KD and function
    matching on a mixup view bank, at every schedule length. ``student`` carries what every run shares."""

    student: StudentConfig
    runs_dir: Path   # where the run directories go
    tuning_dir: Path   # where the held-out tuning runs go (kept out of the report)
    reports_dir: Path   # where the reports go
    students: tuple[str, ...] = (default("STUDENT"),)   # students trained in every arm
    lengths: tuple[int, ...] = setting("LENGTHS", value=tuple(int(v) for v in default("LENGTHS").split()))
    seeds: tuple[int, ...] = (0, 1, 2)   # seeds of the final runs
    Ts: tuple[float, ...] = (1.0, 4.0)   # temperatures to choose from on held-out rows
    alphas: tuple[float, ...] = (0.5, 0.9)   # ALPHA values to choose from, > 0
    tune_seeds: tuple[int, ...] = (0,)   # seeds of the held-out tuning runs
    holdout: int = setting("EXPERIMENT_HOLDOUT", int)
    matching_T: float = 1.0          # function matching's temperature (Beyer et al. match at T = 1)
    replay: int = setting("REPLAY", int)   # views replayed; 0: every view in the cache (the largest bank with banks)
    banks: tuple[int, ...] = setting("BANKS", value=tuple(int(v) for v in default("BANKS").split()))   # sizes K also matched at the longest length, for the bank-vs-fresh gap
    jobs: int = setting("JOBS", int)
    threads: int = setting("THREADS", int)

    def __post_init__(self):
        _check_grids(self.students, self.Ts, self.alphas, self.seeds)
        check_grid("LENGTHS", self.lengths, "EPOCHS")
        if self.banks:
            check_grid("BANKS", self.banks, "VIEWS")
        check_grid("TUNE_SEEDS", self.tune_seeds, "SEED")
        object.__setattr__(self, "alphas", tuple(a for a in self.alphas if a != 0))   # scratch always runs
        if not self.alphas:
            raise UsageError("ALPHAS has no value above 0 for the clean-target arm to choose from; give e.g. "
                             "ALPHAS=\"0.5 0.9\"")
        check("T", self.matching_T), check("EXPERIMENT_HOLDOUT", self.holdout), check("REPLAY", self.replay)
        check("JOBS", self.jobs), check("THREADS", self.threads)




@dataclass(frozen=True)
class ExportConfig:
    """What to export from a finished student run, and how strict the checks are."""

    run_dir: Path   # a finished student run (data/runs/<name>)
    out_dir: Path | None = None       # default: <run_dir>/export
    dataset: Path | None = None       # default: the dataset the run was trained on
    formats: tuple[str, ...] = setting("FORMATS", value=tuple(default("FORMATS").split(",")))
    parity_atol: float = 1e-4         # max |ONNX or TorchScript logit - eager logit| on the test set
    int8_max_drop_pp: float = 0.5     # refuse an int8 model that loses more test accuracy than this
    calibration_rows: int = 1024      # training images used to calibrate int8 activation ranges
    int8_choice_rows: int = 2000      # other training images the int8 recipe is chosen on
    skip_refused: bool = False        # leave out (and record) a format that misses its check, instead of failing
    threads: int = setting("THREADS", int)

    def __post_init__(self):
        formats = tuple(self.formats)
        check("FORMATS", ",".join(formats))
        if "int8" in formats and "onnx" not in formats:
            formats = ("onnx",) + formats   # the int8 model is quantised from the ONNX graph
        object.__setattr__(self, "formats", tuple(dict.fromkeys(formats)))
        _positive("parity tolerance", self.parity_atol)
        _positive("int8 accuracy budget (pp)", self.int8_max_drop_pp)
        _at_least("calibration rows", self.calibration_rows, 1)
        _at_least("int8 choice rows", self.int8_choice_rows, 1)

    @property
    def destination(self) -> Path:
        return self.out_dir if self.out_dir is not None else self.run_dir / "export"


@dataclass(frozen=True)
class PublishLMTeacherConfig:
    """A trained LM teacher copied to float16 published weights, with how it was made."""

    teacher: Path   # the finished teacher.pt (kind lm) to publish
    text: Path   # the prepared text it trained on: its validation and test splits re-score the float16 weights
    out: Path   # the published weights (.pt); its record goes beside it (.json)
    command: str                     # the command that trained the teacher, for the record
    device: str                      # where the teacher trained, in words (e.g. "2-core CPU")
    note: str = ""   # anything else a user should know about this teacher
    replace: str = setting("REPUBLISH")   # the name (stem) of an existing published teacher this may replace
    threads: int = setting("THREADS", int)

    def __post_init__(self):
        if not self.device.strip() or not self.command.strip():
            raise UsageError("publish-lm-teacher needs --command (how the teacher was made) and --device (where it "
                             "trained)")
