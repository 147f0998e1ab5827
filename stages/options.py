"""Click options that stages share, built once; every option for a setting is built from its row in
``pipeline.settings`` (flag, meaning, default and check), so no stage types a setting's help or default."""

import dataclasses
from pathlib import Path

import click

from pipeline.config import StudentConfig, from_options
from pipeline.errors import UsageError
from pipeline.settings import SETTING, check

__all__ = ["setting_option", "table_help", "config_option", "field_default", "shown", "path_option", "dataset_option", "cache_option", "input_options", "teacher_options",
           "experiment_options", "experiment_config", "grid_values", "grid_option", "log_option", "trust_option",
           "advance"]

PATH = click.Path(path_type=Path)


def setting_option(name: str, *decls: str, parse: bool = True, **kw):
    """A click option for the setting ``name``: its flag (``--name-in-kebab-case`` unless ``decls`` says
    otherwise), its help (the table's meaning and default), its click type (the table's choices, or the
    number kind its parser reads) and its check (the table's parser, after click's conversion), unless it
    is a flag or ``parse`` is False (paths: the CLI takes any name the system does). The default stays None,
    so the config's default, read from the same table, is the only one."""
    setting = SETTING[name]
    decls = decls or (f"--{name.lower().replace('_', '-')}",)
    flag = kw.get("is_flag") or "/" in decls[0]
    if parse and not flag:
        if hasattr(setting.parse, "choices"):
            kw.setdefault("type", click.Choice(setting.parse.choices))
        elif hasattr(setting.parse, "kind"):
            kw.setdefault("type", setting.parse.kind)
        kw.setdefault("callback", lambda ctx, param, value: None if value is None else check(name, value))
    if "/" not in decls[0] and not kw.get("is_flag"):
        kw.setdefault("metavar", name)
    return click.option(*decls, help=table_help(name), **kw)


def table_help(name: str) -> str:
    """A setting's help on the command line: its name, the table's meaning, and its default (unless the
    meaning already says what an unset value does)."""
    setting = SETTING[name]
    said = "(default" in setting.help
    return f"{name}: {setting.help}" + ("." if said else f" (default {setting.default or 'unset'}).")


def field_default(config: type, field: str):
    """A config field's default: the one place a knob that is no Make setting declares it."""
    return next(f.default for f in dataclasses.fields(config) if f.name == field)


def config_option(config: type, field: str, what: str, *decls: str):
    """A command-line knob that is no Make setting: its default and type are the config field's own
    (declared once, in ``pipeline.config``), shown in the help; unset, the config's default rules."""
    value = field_default(config, field)
    decls = decls or (f"--{field.replace('_', '-')}",)
    return click.option(*decls, type=type(value), help=f"{what.rstrip('.')} (default {shown([value])}).")


def path_option(flag: str, what: str, required: bool = True, **kw):
    return click.option(flag, type=PATH, required=required, help=what, **kw)


dataset_option = path_option("--dataset", "Prepared dataset (.npz, or .h5 for an image folder).")
cache_option = path_option("--cache", "Teacher-logit cache (.h5).")


def grid_values(name: str, text: str, kind) -> tuple:
    """'1 2 4' or '1,2,4' -> typed tuple; a value that does not parse is named in the error."""
    out = []
    for token in text.replace(",", " ").split():
        try:
            out.append(kind(token))
        except ValueError:
            raise UsageError(f"{name}: {token!r} is not {'a number' if kind is float else 'an integer'}") from None
    return tuple(out)


def grid_option(flag: str, grid: str, kind, help: str | None = None, *decls: str):
    """A grid ('1 2 4' or '1,2,4') typed by a callback; None when unset, so the config's default stays.
    Without ``help``, the grid's own row in the settings table says what it is."""
    if help is None:
        help = table_help(grid)
    return click.option(flag, *decls, help=help, metavar=f"'{grid}'",
                        callback=lambda ctx, param, text: None if text is None else grid_values(grid, text, kind))


def _stacked(*options):
    """One decorator adding ``options`` in the order given (as if written one above the other)."""
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def _labels(ctx, param, value):
    """'all' -> None (every row labelled), 'N' -> N, as every other layer spells it."""
    if value is None:
        return None
    parsed = check("LABELS", value)
    return None if parsed == "all" else parsed


def input_options(command):
    """What a student sees and where it is scored: shared by `student` and `sweep`."""
    return _stacked(
        setting_option("AUGMENT", "--augment/--no-augment", default=None),
        setting_option("REPLAY"),
        setting_option("HOLDOUT"),
        setting_option("TRANSFER", type=PATH, parse=False),
        setting_option("CHECKPOINT_EVERY"),
        setting_option("CHECKPOINT_MINUTES"),
        setting_option("LABELS", callback=_labels),
    )(command)


def teacher_options(command):
    """Whose targets a student matches: shared by `student`, `sweep` and the experiments."""
    return _stacked(
        setting_option("COMBINE"),
        click.option("--teacher-tag", help="Names a non-default teacher in distilled runs' names (e.g. e30-x3)."),
    )(command)


def trust_option(dest: str = "trust"):
    """--trust-undigested-cache, one wording for every command that reads a cache."""
    return click.option("--trust-undigested-cache", dest, is_flag=True, default=None,
                        help="Accept a cache without digests (an older softcache's): nothing then proves its values "
                             "and attributes are the ones its teacher wrote.")


log_option = click.option(
    "--tensorboard-dir", type=PATH,
    help="LOG=tensorboard: also write each epoch's figures as TensorBoard scalars under DIR/<run>.")


def shown(values) -> str:
    """Values as a help text shows them: numbers without trailing zeros, separated by spaces."""
    return " ".join(f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v) for v in values)


def experiment_options(config: type, cache_help: str, report: str):
    """What every experiment-* command takes: where it reads and writes, its grid (typed by callbacks, with
    the defaults of ``config``'s own fields in the help), JOBS and THREADS, whose targets, and the log."""
    d = {f.name: f.default for f in dataclasses.fields(config)}
    return _stacked(
        path_option("--cache", cache_help),
        dataset_option,
        path_option("--runs-dir", "Where the final runs go."),
        path_option("--tuning-dir", "Where the held-out tuning runs go (kept out of the report)."),
        path_option("--reports-dir", f"Where {report} go."),
        path_option("--teacher-record", "teacher.json the cache must come from.", required=False),
        click.option("--students", callback=lambda ctx, param, text: None if text is None else tuple(text.split()),
                     help="Space-separated student names (default: STUDENT's default)."),
        grid_option("--Ts", "TS", float, f"Temperatures to choose from (default {shown(d['Ts'])}).", "Ts"),
        grid_option("--alphas", "ALPHAS", float,
                    f"ALPHA values to choose from, > 0 (default {shown(d['alphas'])})."),
        grid_option("--seeds", "SEEDS", int, f"Seeds of the final runs (default {shown(d['seeds'])})."),
        grid_option("--tune-seeds", "TUNE_SEEDS", int,
                    f"Seeds of the tuning runs (default {shown(d['tune_seeds'])})."),
        setting_option("EXPERIMENT_HOLDOUT", "--holdout", "holdout"),
        setting_option("JOBS"),
        setting_option("THREADS"),
        teacher_options,
        log_option,
    )


def experiment_config(config: type, options: dict, **run_fields):
    """``config`` from an experiment command's options: what every run shares (cache, dataset, teacher,
    log, and ``run_fields``) becomes its StudentConfig, the rest its own fields (unset ones dropped)."""
    shared = {k: options.pop(k) for k in ("cache", "dataset", "teacher_record", "combine", "teacher_tag",
                                           "tensorboard_dir")}
    student = from_options(StudentConfig, out_dir=options["runs_dir"], **shared, **run_fields)
    return from_options(config, student=student, **options)


def advance(bar, record: dict) -> None:
    """A sweep's or experiment's bar, one run further, naming the run just done and how it went
    (held-out accuracy for a tuning run: the score it is chosen by)."""
    metrics = record.get("metrics", {})
    key = "val_acc" if "val_acc" in metrics else "test_acc"
    score = f" {key.split('_')[0]} {100 * metrics[key]:.2f}%" if key in metrics else ""
    bar.set_postfix_str(f"{record['run']} {record['status']}{score}", refresh=False)
    bar.update(1)
