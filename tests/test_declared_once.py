"""Each setting is declared once, in pipeline/settings.py: its meaning is written nowhere else, every
command-line option that carries a setting takes its help, type and check from the table, no help text
types a default by hand, and every config field named after a setting reads its default from the table
(``setting(...)``, which also hands its option the table's row, or ``default(...)``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from pipeline.settings import SETTING, SETTINGS
from stages.cli import COMMANDS, cli
from stages.options import table_help

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("pipeline", "stages") for p in (ROOT / d).rglob("*.py")]

# Options named like a setting that mean something else there (the command-line name came first).
OTHER_MEANING = {
    "dataset": "the prepared file a stage reads; DATASET is what `make data` prepares",
    "teacher": "a teacher file or module:factory to load; TEACHER also takes auto, an architecture or published",
    "teacher_weights": "verify's weights for --teacher, checked to exist by click",
    "seed": "verify's draw of the rows it re-scores",
    "students": "a list typed by its callback; STUDENTS' table text describes Make's default",
    "Ts": "an experiment's own grid (its config's default, shown in the help)",
    "alphas": "an experiment's own grid (its config's default, shown in the help)",
    "seeds": "an experiment's own grid (its config's default, shown in the help)",
    "augment": "the teacher's own crop and flip (on by default); AUGMENT is the student's",
    "tune_seeds": "an experiment's own grid (its config's default, shown in the help)",
    "context": "token-logits' window, 0 by default: the teacher's own context",
    "student": "lm-student's language model; STUDENT's default is an image student (Make gives text lm-small)",
}
# Config fields named like a setting whose default is not the setting's, and why.
FIELD_EXCEPTIONS = {
    ("TeacherConfig", "augment"): "the teacher's own crop and flip, always on; AUGMENT is the student's",
    ("StudentConfig", "labels"): "None is LABELS=all, every row labelled",
    ("SelfDistillConfig", "labels"): "None is LABELS=all, every row labelled",
    **{("SelfKDExperimentConfig", f): "the self-distillation experiment's own grid (two convolutional students); "
       "Make passes the grids only when given" for f in ("students", "Ts", "alphas", "seeds")},
    ("ExportConfig", "dataset"): "the prepared file a run is checked on (default: the run's own)",
    ("TokenLogitsConfig", "context"): "0: the teacher's own context, which a checkpoint or a folder brings",
    ("LMStudentConfig", "student"): "a language model; STUDENT's default (cnn-tiny) is an image student",
    **{("LMExperimentConfig", f): "the LM experiment's own grid (language models); Make passes the grids only when given"
       for f in ("students", "Ts", "alphas", "seeds")},
    **{(c, f): "each experiment's own grid; Make passes TS, ALPHAS and SEEDS explicitly"
       for c in ("ViewsExperimentConfig", "LabelsExperimentConfig", "PatientExperimentConfig")
       for f in ("Ts", "alphas", "seeds")},
}


def _table_help(name: str) -> str:
    return table_help(name)


def _options():
    ctx = click.Context(cli)
    for command in COMMANDS:
        for param in cli.get_command(ctx, command).params:
            if isinstance(param, click.Option):
                yield command, param


def test_each_meaning_is_written_once():
    text = {path: path.read_text() for path in SOURCES}
    for setting in SETTINGS:
        meaning = '"' + setting.help.split("{")[0][:40]   # a string literal that starts as the meaning does
        holders = [p.relative_to(ROOT) for p, t in text.items() if meaning in t]
        assert holders == [Path("pipeline/settings.py")], (setting.name, holders)


def test_options_that_carry_a_setting_take_its_help_from_the_table():
    for command, option in _options():
        help_text = option.help or ""
        named = re.match(r"([A-Z][A-Z_]*): ", help_text)
        if named and named.group(1) in SETTING:
            assert help_text == _table_help(named.group(1)), (command, option.opts)
        elif option.name.upper() in SETTING and option.name not in OTHER_MEANING:
            pytest.fail(f"softcache {command} {option.opts[0]} carries {option.name.upper()} but not its table row")


def test_no_help_text_types_a_default_by_hand():
    for path in (ROOT / "stages").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not re.search(r"default:? ?[0-9]|\([0-9][0-9.]*\)\.?$", node.value), (path.name, node.value)


def test_config_fields_named_after_a_setting_read_its_default_from_the_table():
    tree = ast.parse((ROOT / "pipeline" / "config.py").read_text())
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for field in (n for n in cls.body if isinstance(n, ast.AnnAssign) and n.value is not None):
            name = field.target.id
            if name.upper() not in SETTING or (cls.name, name) in FIELD_EXCEPTIONS:
                continue
            value = ast.unparse(field.value)
            unset = value == "None" and SETTING[name.upper()].default == ""
            assert unset or "default(" in value or "setting(" in value, f"{cls.name}.{name} = {value}: read it from the table"
