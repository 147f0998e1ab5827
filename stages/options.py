"""Click options and progress helpers that several stages share, defined once."""

import dataclasses
from pathlib import Path

import click

from pipeline.config import StudentConfig, from_options
from pipeline.errors import UsageError
from pipeline.settings import check

__all__ = ["input_options", "teacher_options", "experiment_options", "experiment_config", "grid_values", "log_option", "trust_option", "advance"]


def grid_values(name: str, text: str, kind) -> tuple:
    """'1 2 4' or '1,2,4' -> typed tuple; a value that does not parse is named in the error."""
    out = []
    for token in text.replace(",", " ").split():
        try:
            out.append(kind(token))
        except ValueError:
            raise UsageError(f"{name}: {token!r} is not {'a number' if kind is float else 'an integer'}") from None
    return tuple(out)


def _stacked(*options):
    """One decorator adding ``options`` in the order given (as if written one above the other)."""
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def input_options(command):
    """What a student sees and where it is scored: shared by `student` and `sweep`."""
    return _stacked(
        click.option("--augment/--no-augment", default=None,
                     help="Random crop + flip against the clean image's logits (default off)."),
        click.option("--replay", type=int,
                     help="Train on the first K views cached by VIEWS=K, each with its own logits (0: off)."),
        click.option("--holdout", type=int,
                     help="Leave N fixed training rows out and report val_acc on them (0: off)."),
        click.option("--transfer", type=click.Path(path_type=Path),
                     help="TRANSFER: the .npz of unlabelled images whose logits the cache holds (soft term only)."),
        click.option("--checkpoint-every", type=int,
                     help="CHECKPOINT_EVERY: save the whole training state every N epochs (default 1; 0: never)."),
        click.option("--checkpoint-minutes", type=float,
                     help="CHECKPOINT_MINUTES: also save it after this many minutes (default 0: off)."),
        click.option("--labels", callback=_labels,
                     help="LABELS: hard labels on only N class-balanced training rows (all: every row, the default)."),
    )(command)


def _labels(ctx, param, value):
    """'all' -> None (every row labelled), 'N' -> N, as every other layer spells it."""
    if value is None:
        return None
    parsed = check("LABELS", value)
    return None if parsed == "all" else parsed


def _grid(name: str, kind):
    """A click callback: '1 2 4' -> (1, 2, 4) of ``kind``, None when unset (the config's default stays)."""
    return lambda ctx, param, text: None if text is None else grid_values(name, text, kind)


def _shown(values) -> str:
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def experiment_options(config: type, cache_help: str, report: str):
    """What every experiment-* command takes: where it reads and writes, its grid (typed by callbacks, with
    the defaults of ``config``'s own fields in the help), JOBS and THREADS, whose targets, and the log."""
    d = {f.name: f.default for f in dataclasses.fields(config)}
    return _stacked(
        click.option("--cache", type=click.Path(path_type=Path), required=True, help=cache_help),
        click.option("--dataset", type=click.Path(path_type=Path), required=True,
                     help="Prepared dataset (.npz, or .h5 for an image folder)."),
        click.option("--runs-dir", type=click.Path(path_type=Path), required=True, help="Where the final runs go."),
        click.option("--tuning-dir", type=click.Path(path_type=Path), required=True,
                     help="Where the held-out tuning runs go (kept out of the report)."),
        click.option("--reports-dir", type=click.Path(path_type=Path), required=True, help=f"Where {report} go."),
        click.option("--teacher-record", type=click.Path(path_type=Path),
                     help="teacher.json the cache must come from."),
        click.option("--students", callback=lambda ctx, param, text: None if text is None else tuple(text.split()),
                     help="Space-separated student names (default: STUDENT's default)."),
        click.option("--Ts", "Ts", callback=_grid("TS", float),
                     help=f"Temperatures to choose from (default {_shown(d['Ts'])})."),
        click.option("--alphas", callback=_grid("ALPHAS", float),
                     help=f"ALPHA values to choose from, > 0 (default {_shown(d['alphas'])})."),
        click.option("--seeds", callback=_grid("SEEDS", int), help=f"Seeds of the final runs (default {_shown(d['seeds'])})."),
        click.option("--tune-seeds", callback=_grid("TUNE_SEEDS", int),
                     help=f"Seeds of the tuning runs (default {_shown(d['tune_seeds'])})."),
        click.option("--holdout", type=int, help=f"Training rows held out for tuning (default {d['holdout']})."),
        click.option("--jobs", type=int, help=f"Runs at once (default {d['jobs']})."),
        click.option("--threads", type=int, help="torch threads per run (default 0: cores/jobs)."),
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


def teacher_options(command):
    """Whose targets a student matches: shared by `student`, `sweep` and the experiments."""
    return _stacked(
        click.option("--combine", help="COMBINE: an ensemble's targets: logits (their mean, the default), "
                                       "probs (mean probability) or a member number."),
        click.option("--teacher-tag", help="Names a non-default teacher in distilled runs' names (e.g. e30-x3)."),
    )(command)


def trust_option(dest: str = "trust"):
    """--trust-undigested-cache, one wording for every command that reads a cache."""
    return click.option("--trust-undigested-cache", dest, is_flag=True, default=None,
                        help="Accept a cache without digests (an older softcache's): nothing then proves its values "
                             "and attributes are the ones its teacher wrote.")


log_option = click.option(
    "--tensorboard-dir", type=click.Path(path_type=Path),
    help="LOG=tensorboard: also write each epoch's figures as TensorBoard scalars under DIR/<run>.")


def advance(bar, record: dict) -> None:
    """A sweep's or experiment's bar, one run further, naming the run just done and how it went
    (held-out accuracy for a tuning run: the score it is chosen by)."""
    metrics = record.get("metrics", {})
    key = "val_acc" if "val_acc" in metrics else "test_acc"
    score = f" {key.split('_')[0]} {100 * metrics[key]:.2f}%" if key in metrics else ""
    bar.set_postfix_str(f"{record['run']} {record['status']}{score}", refresh=False)
    bar.update(1)
