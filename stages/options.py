"""Click options built from the configs, the way litgpt builds its flags from signatures: one option per
field of a ``pipeline.config`` dataclass, named after the field. A field that carries a setting
(``config.setting``) takes the settings table's help, type and check; any other field takes the comment
beside it and its own default. So no stage types a setting's help, a default or a flag."""

import dataclasses
import inspect
import json
import re
from pathlib import Path

import click

from pipeline.config import StudentConfig, from_options
from pipeline.errors import UsageError
from pipeline.settings import SETTING, check

__all__ = ["config_options", "own_options", "setting_option", "table_help", "shown", "grid_values", "trust_option",
           "labels_option", "experiment_config", "advance", "echo_entry"]

PATH = click.Path(path_type=Path)
KINDS = {"int": int, "float": float, "str": str, "bool": bool, "Path": Path}


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
    if not flag:
        kw.setdefault("metavar", name)
    return click.option(*decls, help=table_help(name), **kw)


def table_help(name: str) -> str:
    """A setting's help on the command line: its name, the table's meaning, and its default (unless the
    meaning already says what an unset value does)."""
    setting = SETTING[name]
    said = "(default" in setting.help
    return f"{name}: {setting.help}" + ("." if said else f" (default {setting.default or 'unset'}).")


def shown(values) -> str:
    """Values as a help text shows them: numbers without trailing zeros, separated by spaces."""
    return " ".join(f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v) for v in values)


def grid_values(name: str, text: str, kind) -> tuple:
    """'1 2 4' or '1,2,4' -> typed tuple; a value that does not parse is named in the error."""
    out = []
    for token in text.replace(",", " ").split():
        try:
            out.append(kind(token))
        except ValueError:
            raise UsageError(f"{name}: {token!r} is not {'a number' if kind is float else 'an integer'}") from None
    return tuple(out)


def _comments(config: type) -> dict[str, str]:
    """Each field's trailing comment in ``config``'s source: what the field is, said once, beside it."""
    found = re.findall(r"^    (\w+): [^#\n]*#\s*(.+)$", inspect.getsource(config), flags=re.M)
    return dict(found)


def _field_option(config: type, field: dataclasses.Field, comment: str | None, flag: str | None):
    """The option of one config field, or None for a field the command line cannot carry (a nested config)."""
    name, annotation = field.name, str(field.type)
    flag = flag or f"--{name.replace('_', '-')}"
    setting, parse = field.metadata.get("setting"), field.metadata.get("parse", True)
    required = field.default is dataclasses.MISSING
    kind = KINDS.get(re.split(r"[\[\] |,]", annotation.removeprefix("tuple["))[0])
    if kind is None:
        return None
    said = table_help(setting) if setting else f"{(comment or name).rstrip('.')}"
    if annotation == "bool":
        decls = (f"{flag}/--no-{flag[2:]}",) if field.default or setting else (flag,)
        return click.option(*decls, name, is_flag=True, default=None, help=said)
    if annotation.startswith("tuple") and kind is Path:
        return click.option(flag, name, multiple=True, type=PATH, required=required, help=said)
    if annotation.startswith("tuple"):
        grid = setting or name.upper()
        read = (lambda text: grid_values(grid, str(check(grid, text)), kind)) if setting else \
            (lambda text: grid_values(grid, text, kind))
        return click.option(flag, name, metavar=f"'{grid}'", help=said if setting else f"{said} (default {shown(field.default)}).",
                            callback=lambda ctx, param, text: None if text is None else read(text))
    if setting:
        return setting_option(setting, flag, name, parse=parse, required=required, **({"type": PATH} if kind is Path else {}))
    if kind is Path or required:
        return click.option(flag, name, type=PATH if kind is Path else str, required=required, help=said)
    return click.option(flag, name, type=type(field.default) if field.default is not None else kind,
                        help=f"{said} (default {shown([field.default]) or 'unset'}).")


def config_options(config: type, *, skip=(), only=None, flags=None, override=None):
    """One option per field of ``config`` (in field order), but those in ``skip`` or outside ``only``;
    ``flags`` renames a field's flag, ``override`` replaces its option."""
    comments, options = _comments(config), []
    for field in dataclasses.fields(config):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        built = (override or {}).get(field.name) or _field_option(config, field, comments.get(field.name),
                                                                   (flags or {}).get(field.name))
        if built is not None:
            options.append(built)

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def own_options(config: type, options: dict) -> dict:
    """The options that are ``config``'s own fields, taken out of ``options`` (the rest stay)."""
    return {f.name: options.pop(f.name) for f in dataclasses.fields(config) if f.name in options}


def _labels(ctx, param, value):
    """'all' -> None (every row labelled), 'N' -> N, as every other layer spells it."""
    if value is None:
        return None
    parsed = check("LABELS", value)
    return None if parsed == "all" else parsed


labels_option = setting_option("LABELS", "--labels", "labels", callback=_labels)


def echo_entry(entry: dict) -> None:
    """A training run's history entry as one JSON line on stderr (the LM stages' progress log)."""
    click.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}), err=True)


def trust_option(dest: str = "trust"):
    """--trust-undigested-cache, one wording for every command that reads a cache."""
    return click.option("--trust-undigested-cache", dest, is_flag=True, default=None,
                        help="Accept a cache without digests (an older softcache's): nothing then proves its values "
                             "and attributes are the ones its teacher wrote.")


# What every run of an experiment shares, from the student's own config.
SHARED = ("cache", "dataset", "teacher_record", "combine", "teacher_tag", "tensorboard_dir")


def experiment_config(config: type, options: dict):
    """``config`` from an experiment command's options: its own fields, and a StudentConfig of the rest
    (what every run shares) that writes to its runs_dir."""
    own = own_options(config, options)
    return from_options(config, student=from_options(StudentConfig, out_dir=own["runs_dir"], **options), **own)


def advance(bar, record: dict) -> None:
    """A sweep's or experiment's bar, one run further, naming the run just done and how it went
    (held-out accuracy for a tuning run: the score it is chosen by)."""
    metrics = record.get("metrics", {})
    key = "val_acc" if "val_acc" in metrics else "test_acc"
    score = f" {key.split('_')[0]} {100 * metrics[key]:.2f}%" if key in metrics else ""
    bar.set_postfix_str(f"{record['run']} {record['status']}{score}", refresh=False)
    bar.update(1)
