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
