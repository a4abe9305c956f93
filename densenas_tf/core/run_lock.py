"""One process per run directory: an exclusive lock held while a run writes there.

The search and the retraining take ``run_dir/.lock`` (``fcntl.flock``, the
holder's pid written inside) before they write or delete anything in their
run directory. The kernel drops the lock when its process exits, also on a
crash or a kill, so a stale lock never blocks a new run. The lock file is
never deleted, not even by ``--overwrite`` (:func:`clear_run_dir` keeps it):
a second process could otherwise lock a new file of the same name while the
first still holds the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from densenas_tf.core.errors import DenseNASError

LOCK_NAME = ".lock"


class RunDirError(DenseNASError, ValueError):
    """A run directory that holds another run, is in use, or cannot be resumed."""


def _holder(fd: int) -> str:
    """The pid written in the lock file, as the refusal names it."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process (pid not written yet)"


@contextlib.contextmanager
def locked_run_dir(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Creates run_dir if needed and holds its lock for the ``with`` block;
    yields the lock file's path. Another holder is refused with RunDirError."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"{run_dir} is in use by {_holder(fd)} (it holds {path}); wait for that run to "
                "end or stop it, or pick another run directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def clear_run_dir(run_dir: str | os.PathLike) -> None:
    """Deletes everything in run_dir but its lock file (call it holding the lock)."""
    for entry in Path(run_dir).iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
