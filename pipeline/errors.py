"""Errors a user can cause and fix. The CLI prints their message on one line and exits 2;
anything else is a bug and keeps its traceback."""

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input, a missing or stale artifact: the message says what to do about it."""
