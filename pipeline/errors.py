"""Errors a user can cause and fix. The CLI prints their message on one line and exits 2;
anything else is a bug and keeps its traceback.

An error says what went wrong and, where a stage would fix it, which stage: the layer the
user called phrases that fix in its own terms. Make users read ``make teacher-logits``,
``softcache`` users ``softcache teacher-logits``, Python users the function to call.
"""

from __future__ import annotations

import os

__all__ = ["UsageError", "CALLER_ENV", "phrase_fix"]

# Set by the Makefile for the softcache commands its recipes run, so they speak Make.
CALLER_ENV = "SOFTCACHE_CALLER"

_PYTHON_FIX = {
    "data": "pipeline.data.prepare.save_prepared(load_dataset(...), path)",
    "teacher": "pipeline.teacher.fit.train_teacher(TeacherConfig(...))",
    "teacher-logits": "pipeline.teacher.logits_pass.write_teacher_logits(LogitsConfig(...))",
    "student": "pipeline.student.distill.train_student(StudentConfig(...))",
    "experiment-views": "pipeline.experiments.views.run_views_experiment(ViewsExperimentConfig(...))",
    # the text side's own stages: the same Make targets, their own commands and calls
    "text-data": "pipeline.data.windows.prepare_text(load_corpus(...), load_tokenizer(...), path)",
    "token-logits": "pipeline.teacher.lm_pass.write_token_logits(TokenLogitsConfig(...))",
    "lm-teacher": "pipeline.teacher.lm_fit.train_lm_teacher(LMTeacherConfig(...))",
    "lm-student": "pipeline.student.lm_distill.train_lm_student(LMStudentConfig(...))",
}
# Make has one target per stage for images and text alike; the CLI has a command of each side's own.
_MAKE_TARGET = {"text-data": "data", "token-logits": "teacher-logits", "lm-teacher": "teacher", "lm-student": "student"}
_CLI_COMMAND = {"text-data": "data"}


def phrase_fix(stage: str, settings: dict | None = None, caller: str | None = None) -> str:
    """How to run the stage that fixes it, for ``caller`` ('make', 'cli' or 'python'; default: the
    environment's, else 'python'): "run 'make teacher-logits VIEWS=8'", "run 'softcache
    teacher-logits --views 8'", or "call pipeline.teacher.logits_pass.write_teacher_logits(LogitsConfig(..., views=8))"."""
    caller = caller or os.environ.get(CALLER_ENV, "python")
    settings = settings or {}
    if caller == "make":
        target = _MAKE_TARGET.get(stage, stage)
        return "run '" + " ".join([f"make {target}", *(f"{k}={v}" for k, v in settings.items())]) + "'"
    if caller == "cli":
        flags = (f"--{k.lower().replace('_', '-')} {v}" for k, v in settings.items())
        return "run '" + " ".join([f"softcache {_CLI_COMMAND.get(stage, stage)}", *flags]) + "'"
    args = ", ".join(f"{k.lower()}={v!r}" for k, v in settings.items())
    call = _PYTHON_FIX.get(stage, f"the {stage} stage")
    return "call " + (call.replace("(...)", f"(..., {args})") if args else call)


class UsageError(Exception):
    """Bad input, a missing or stale artifact: the message says what to do about it.

    ``fix`` names the stage that repairs it (with ``fix_settings`` to give it), phrased when
    the message is shown: ``str(error)`` in the caller's terms (see :func:`phrase_fix`)."""

    def __init__(self, message: str, *, fix: str | None = None, fix_settings: dict | None = None):
        super().__init__(message)
        self.message, self.fix, self.fix_settings = message, fix, fix_settings or {}

    def __str__(self) -> str:
        if self.fix is None:
            return self.message
        return f"{self.message}; {phrase_fix(self.fix, self.fix_settings)}"
