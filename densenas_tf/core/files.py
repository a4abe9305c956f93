"""Small file helpers shared by every writer in the package."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes text to path via a temporary file and a rename: never half-written."""
    with replace_atomic(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def replace_atomic(path: str | os.PathLike, keep_suffix: bool = False):
    """The one atomic writer: yields a temporary path beside ``path`` for the
    caller to write (a file or a directory); when the block ends without an
    error it is renamed over ``path``, else removed. An existing directory at
    ``path`` is moved aside and deleted only once the new one is in place.
    ``keep_suffix`` keeps ``path``'s extension on the temporary name (Keras's
    ``model.save`` wants ``.keras``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    if keep_suffix:
        tmp = path.with_name(f".{path.stem}.tmp-{pid}{path.suffix}")
    else:
        tmp = path.with_name(f".{path.name}.tmp-{pid}")
    old = path.with_name(f".{path.name}.old-{pid}")
    try:
        try:
            yield tmp
        except OSError as err:
            if err.filename is not None or err.errno is None:
                raise
            # A failed write (a full disk) names no file: name the one written.
            raise OSError(err.errno, err.strerror, str(path)) from err
        if path.is_dir() and not path.is_symlink():
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
        else:
            os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            elif leftover.exists() or leftover.is_symlink():
                leftover.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes bytes to path via a temporary file and a rename."""
    with replace_atomic(path) as tmp:
        tmp.write_bytes(data)


def cached_json(path: str | os.PathLike, make):
    """The JSON in path if it is there; else make() written there atomically
    (how a multi-stage run skips the stages it has finished)."""

    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    result = make()
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    return result
