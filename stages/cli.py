"""The ``softcache`` command: one subcommand per stage, errors as one line and exit status 2.

Errors a user can cause (click's usage errors, :class:`pipeline.errors.UsageError`) are
printed as ``softcache <stage>: error: ...`` on one line; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from pipeline.errors import CALLER_ENV, UsageError
from pipeline.files import os_error_line

__all__ = ["cli", "main"]

# Every command, in the order `softcache --help` lists them; each lives in stages/<command>.py (dashes as
# underscores), but for reseal and publish-lm-teacher, which live beside publish.
COMMANDS = ("data", "teacher", "teacher-logits", "ensemble", "publish", "reseal", "publish-lm-teacher", "student", "sweep",
            "experiment-views", "experiment-labels", "experiment-patient", "self-distill", "experiment-selfkd", "export", "report",
            "inspect", "verify", "lm-teacher", "token-logits", "lm-student", "generate", "experiment-lm")
_HOME = {"reseal": "publish", "publish-lm-teacher": "publish"}


class _Commands(click.Group):
    """Imports a command's module only when that command runs (click's lazy group), so `softcache data`
    does not load what export or the experiments need."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        attr = name.replace("-", "_")
        return getattr(importlib.import_module(f"stages.{_HOME.get(name, attr)}"), attr)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """softcache: run the teacher once, cache its soft targets, train students on the CPU."""


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
    except (click.ClickException, UsageError, OSError) as exc:   # OSError: a full disk, or a path the system refuses
        line = (f"{exc.format_message()} (see --help)" if isinstance(exc, click.ClickException) else
                os_error_line(exc) if isinstance(exc, OSError) else str(exc))
        if line is None:
            raise
        click.echo(f"{prefix}: error: {' '.join(line.split())}", err=True)
        code = 2
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo(f"{prefix}: interrupted; no finished artifact was changed", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
