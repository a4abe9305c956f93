"""The one base class of the errors a user can act on.

Every error the package raises for bad input or a fault outside the code (a
bad config, data that do not fit the space, a corrupt file, a full disk, a
locked run directory) derives from :class:`DenseNASError` and says in one line
what is wrong and how to fix it. The binaries catch it once, in
:func:`densenas_tf.cli.main`, print ``error: <message>`` and exit with the
error's ``exit_code``.
"""

from __future__ import annotations

import errno
import re


class DenseNASError(Exception):
    """Bad input or an outside fault, with a message that names the fix."""

    exit_code = 1


def describe_os_error(err: OSError) -> str:
    """One line for a file-system fault, naming the file and what to do."""
    where = f" {err.filename}" if err.filename else ""
    reason = err.strerror or str(err)
    fixes = {
        errno.ENOSPC: "free some disk space (or pick a run directory on another disk) and re-run",
        errno.EDQUOT: "free some disk space (or pick a run directory on another disk) and re-run",
        errno.EROFS: "pick a writable directory",
        errno.EACCES: "pick a directory you may write to, or fix its permissions",
        errno.EPERM: "pick a directory you may write to, or fix its permissions",
        errno.ENOENT: "check the path",
        errno.EISDIR: "give a file, not a directory",
        errno.ENOTDIR: "check the path: a part of it is a file",
    }
    fix = fixes.get(err.errno, "check the path and the disk")
    if not where:
        return f"{reason} (the system named no file); {fix}"
    return f"{reason}:{where}; {fix}"


# TensorFlow's errors for file-system faults (their class name -> the errno
# they stand for); ResourceExhaustedError only when the message says the disk.
_TF_FILE_ERRORS = {
    "PermissionDeniedError": errno.EACCES,
    "NotFoundError": errno.ENOENT,
    "ResourceExhaustedError": None,
    "FailedPreconditionError": None,
    "UnknownError": None,
    "DataLossError": None,
}
_TF_REASONS = (
    ("No space left on device", errno.ENOSPC),
    ("Disk quota exceeded", errno.EDQUOT),
    ("Read-only file system", errno.EROFS),
    ("Permission denied", errno.EACCES),
    ("Operation not permitted", errno.EPERM),
    ("No such file or directory", errno.ENOENT),
    ("Is a directory", errno.EISDIR),
    ("Not a directory", errno.ENOTDIR),
)
# TensorFlow says "PATH; REASON"; else a path anywhere in the message
# (absolute, or relative with a directory part).
_PATH_THEN_REASON = re.compile(r"(\S+); (?:" + "|".join(r for r, _ in _TF_REASONS) + ")")
_PATH = re.compile(r"(?<![\w:])((?:/|\.{1,2}/|[\w.-]+/)[^\s;,'\"]*[^\s;,'\".:])")


def tf_os_error(err: BaseException) -> OSError | None:
    """The OSError a TensorFlow error stands for when it is a file-system
    fault (a full disk, read-only or forbidden storage, a missing file),
    with the path its message names; else None (TensorFlow's error is then
    no file-system fault, or names no file)."""

    name = type(err).__name__
    if not type(err).__module__.startswith("tensorflow") or name not in _TF_FILE_ERRORS:
        return None
    message = getattr(err, "message", None) or str(err)
    message = re.sub(r"\{\{.*?\}\}", "", message)  # the op's function name
    reason, code = next(
        ((r, c) for r, c in _TF_REASONS if r in message), (None, _TF_FILE_ERRORS[name])
    )
    found = _PATH_THEN_REASON.search(message) or _PATH.search(message)
    path = found.group(1) if found else None
    if code is None or (reason is None and path is None):
        return None
    reason = reason or next(r for r, c in _TF_REASONS if c == code)
    return OSError(code, reason, path)
