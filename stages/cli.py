"""The ``softcache`` command: one subcommand per stage, errors as one line and exit status 2.

Errors a user can cause (click's usage errors, :class:`pipeline.errors.UsageError`) are
printed as ``softcache <stage>: error: ...`` on one line; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys

import click

from pipeline.errors import CALLER_ENV, UsageError
from pipeline.files import is_disk_full
from stages.data import data
from stages.ensemble import ensemble
from stages.experiment_labels import experiment_labels
from stages.experiment_patient import experiment_patient
from stages.experiment_views import experiment_views
from stages.export import export
from stages.inspect import inspect
from stages.publish import publish, reseal
from stages.report import report
from stages.self_distill import self_distill
from stages.student import student
from stages.sweep import sweep
from stages.teacher import teacher
from stages.teacher_logits import teacher_logits
from stages.verify import verify

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """softcache: run the teacher once, cache its soft targets, train students on the CPU."""


for command in (data, teacher, teacher_logits, ensemble, publish, reseal, student, sweep, experiment_views,
                experiment_labels, experiment_patient, self_distill, export, report, inspect, verify):
    cli.add_command(command)


_PATH_ERRORS = {errno.ENAMETOOLONG: "use a shorter path (at most 255 characters for each name)",
                errno.EACCES: "check the path's permissions", errno.EPERM: "check the path's permissions",
                errno.EROFS: "write to a folder on a writable file system (DATA_DIR)",
                errno.ELOOP: "a link in the path points in a loop; fix or remove it",
                errno.ENOTDIR: "a part of the path is a file, not a folder"}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    caller = os.environ.get(CALLER_ENV)
    os.environ[CALLER_ENV] = caller or "cli"   # errors name their fix as a softcache command (Make sets "make")
    try:
        _main(argv)
    finally:   # in-process callers (tests, notebooks) keep their own phrasing
        if caller is None:
            del os.environ[CALLER_ENV]


def _main(argv: list[str] | None) -> None:
    stage = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "")
    prefix = f"softcache {stage}".strip()
    try:
        code = cli.main(args=argv, prog_name="softcache", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        click.echo(f"{prefix}: error: {_one_line(exc.format_message())} (see --help)", err=True)
        code = 2
    except UsageError as exc:
        click.echo(f"{prefix}: error: {_one_line(str(exc))}", err=True)
        code = 2
    except OSError as exc:      # a full disk, or a path the system refuses, met where no stage checked for it
        if exc.errno in _PATH_ERRORS:
            name = str(exc.filename or "")
            click.echo(f"{prefix}: error: {exc.strerror}: {name[:80]}{'...' if len(name) > 80 else ''}; "
                       f"{_PATH_ERRORS[exc.errno]}", err=True)
            sys.exit(2)
        if not is_disk_full(exc):
            raise
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        click.echo(f"{prefix}: error: no space left on device{where}; free some space and run the same command "
                   f"again (finished artifacts are unchanged)", err=True)
        code = 2
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo(f"{prefix}: interrupted; no finished artifact was changed", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
