"""Atomic writes: every artifact appears under its final name complete or not at all.

A stage writes to a temporary sibling (same directory, so the rename stays on one file
system) and renames it into place only after the last byte is written. A killed stage
leaves at most a ``.NAME.tmp-PID@HOST-*`` file behind, which no later stage mistakes for an artifact and
the next writer of NAME removes once PID is gone.
Writers that take a while (the teacher pass, a self-distillation run) also hold an
exclusive lock, so two of them never write the same artifact at once.

No write follows a symbolic link softcache did not make: DATA_DIR may be shared (Dask workers,
a team's scratch disk), and a planted ``.NAME.lock`` or ``.NAME.resume`` link would otherwise
aim a write at a file elsewhere. Locks are opened with ``O_NOFOLLOW`` and never truncated,
temporaries are created exclusively (``mkstemp``: ``O_EXCL`` refuses any existing name, links
included), the working directories beside an artifact are refused when they are links, and a
rename replaces a link at the final name rather than writing through it. DATA_DIR itself, and
the folders a user links into it, are the user's to place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.errors import UsageError

__all__ = ["atomic_path", "atomic_dir", "reserved_hdf5", "remove_dead_temporaries", "exclusive_writer", "lock_path",
           "write_json", "read_json", "need_space", "no_space", "is_disk_full", "os_error_line", "disk_full_is_one_line",
           "refuse_link", "working_dir"]


def refuse_link(path: Path) -> Path:
    """``path`` unless it is a symbolic link: softcache writes through no link it did not make."""
    path = Path(path)
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link, which softcache did not make and will not write through; "
                         f"remove it (rm {path}) and run the same command again")
    return path


def working_dir(path: Path) -> Path:
    """A working directory softcache keeps beside an artifact (``.NAME.resume``, ``.NAME.parts``): made
    if missing, refused if it is a link or not a directory."""
    path = refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise UsageError(f"{path} is not a directory; remove it and run the same command again") from None
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:    # another user's live process
        return True
    return True


_HOST = socket.gethostname().replace("-", "_")   # '-' separates the name's fields


def _writer() -> str:
    """PID@HOST: names a writer's temporaries, so the next writer can tell a dead one's (on a shared
    DATA_DIR, only the machine that ran a writer can tell)."""
    return f"{os.getpid()}@{_HOST}"


def remove_dead_temporaries(final: Path) -> list[Path]:
    """Remove what killed writers of ``final`` left beside it: ``.NAME.tmp-PID@HOST-*`` and
    ``.NAME.old-PID@HOST`` of this machine whose process is gone (a live writer's are left alone).
    A writer killed between moving the old ``final`` aside and moving the new one in left no
    ``final``: the old one is put back. Returns what was removed."""
    final = Path(final)
    removed = []
    for kind in ("tmp", "old"):
        prefix = f".{final.name}.{kind}-"
        for leftover in final.parent.glob(glob.escape(prefix) + "*"):
            pid, _, host = leftover.name[len(prefix):].split("-")[0].partition("@")
            # A live writer's, or another machine's (not ours to judge): left alone.
            if not pid.isdigit() or host != _HOST or _alive(int(pid)):
                continue
            if kind == "old" and not final.exists():   # killed between its two renames: the old one is back
                os.replace(leftover, final)
                continue
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.parent.name.startswith("."):     # softcache's own working directory: never a link
        refuse_link(final.parent)
    remove_dead_temporaries(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-{_writer()}-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes owner-only files; artifacts are shared
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; swap it in for ``final`` on success.

    The old directory, if any, is moved aside first and removed only after the new one
    is in place, so at every moment ``final`` is either the old run or the new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{_writer()}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    old = final.parent / f".{final.name}.old-{_writer()}"
    try:
        yield tmp
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent: where the bytes would go."""
    directory = Path(path)
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory


def no_space(path: Path, need_bytes: int | None = None) -> UsageError:
    """The one line a full disk gets: where, how much is needed (when known) and how much is free."""
    directory = _existing(path)
    free = shutil.disk_usage(directory).free
    need = f"need about {_megabytes(need_bytes)}, " if need_bytes else ""
    return UsageError(f"no space left on {directory} to write {Path(path).name}: {need}{_megabytes(free)} free; "
                      f"free some space (or point DATA_DIR elsewhere) and run the same command again")


def need_space(path: Path, need_bytes: int) -> None:
    """Refuse before a big write that cannot fit, rather than fail half-way through it."""
    if shutil.disk_usage(_existing(path)).free < need_bytes:
        raise no_space(path, need_bytes)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, as the OS raises it or as h5py and torch word it (they often drop the errno)."""
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc) \
        or "errno = 28" in str(exc)


_PATH_ERRORS = {errno.ENAMETOOLONG: "use a shorter path (at most 255 characters for each name)",
                errno.EACCES: "check the path's permissions", errno.EPERM: "check the path's permissions",
                errno.EROFS: "write to a folder on a writable file system (DATA_DIR)",
                errno.ELOOP: "a link in the path points in a loop; fix or remove it",
                errno.ENOTDIR: "a part of the path is a file, not a folder"}


def os_error_line(exc: OSError) -> str | None:
    """What to tell a user about an OSError no stage checked for: a full disk, or a path the system refuses
    (too long, no permission, read-only, a link loop); None for anything else, which is a bug."""
    if exc.errno in _PATH_ERRORS:
        name = str(exc.filename or "")
        return f"{exc.strerror}: {name[:80]}{'...' if len(name) > 80 else ''}; {_PATH_ERRORS[exc.errno]}"
    if is_disk_full(exc):
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        return (f"no space left on device{where}; free some space and run the same command again (finished "
                f"artifacts are unchanged)")
    return None


@contextlib.contextmanager
def disk_full_is_one_line(path: Path, need_bytes: int | None = None) -> Iterator[None]:
    """Turn a full disk met while writing ``path`` into :func:`no_space`'s one line."""
    try:
        yield
    except UsageError:
        raise
    except Exception as exc:
        # torch.save words a short write as "unexpected pos": a write error where the space it needed is
        # not there counts as a full disk too.
        short = isinstance(exc, (OSError, RuntimeError)) and need_bytes is not None \
            and shutil.disk_usage(_existing(path)).free < need_bytes
        if is_disk_full(exc) or short:
            raise no_space(path, need_bytes) from None
        raise


def reserved_hdf5(tmp: Path, need_bytes: int):
    """A new HDF5 file at ``tmp`` (a temporary name) with ``need_bytes`` of disk reserved before HDF5 writes
    a byte, opened for writing. HDF5 met by a full disk half-way fails in its destructors and has crashed the
    process (a segmentation fault); with the space reserved, a full disk is an OSError here, before any write,
    which :func:`disk_full_is_one_line` words. HDF5 trims the file to its real size on closing."""
    import h5py

    h5py.File(tmp, "w").close()
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, max(1, int(need_bytes)))
    finally:
        os.close(fd)
    return h5py.File(tmp, "r+")


def write_json(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    """A JSON record softcache wrote: an object, or a one-line UsageError (a file in softcache's folders that
    another tool wrote, or one cut short, is not trusted as a record)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not a JSON record softcache wrote ({str(exc).splitlines()[0]}); "
                         f"move it away, or run the step that makes it again") from None
    if not isinstance(record, dict):
        raise UsageError(f"{path} is not a JSON record softcache wrote (it holds a {type(record).__name__}, "
                         f"not an object); move it away, or run the step that makes it again")
    return record


def lock_path(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.lock"


@contextlib.contextmanager
def exclusive_writer(out: Path, what: str = "teacher pass") -> Iterator[None]:
    """Refuse a second writer of ``out`` while one runs (the OS drops the lock when its
    holder dies, so a killed pass never blocks the next). The lock file is removed by its
    holder on the way out; a writer that locked a file already removed (it opened it just
    before) sees that the path no longer names it, and counts as second."""
    lock = lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
    busy = UsageError(f"another {what} is writing {out}; wait for it to finish or stop it")
    try:   # no O_TRUNC: a lock holds no bytes, and a file planted under its name keeps its own
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            refuse_link(lock)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{lock} is not a regular file; remove it and run the same command again")
    with os.fdopen(fd, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        try:
            if os.stat(lock).st_ino != os.fstat(fh.fileno()).st_ino:
                raise busy
        except FileNotFoundError:
            raise busy from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)    # still holding it: no one can take a lock on this file now
