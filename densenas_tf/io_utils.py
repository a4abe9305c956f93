"""Small file helpers shared by every writer in the package."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes text to path via a temporary file and a rename: never half-written."""
    with replace_atomic(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def replace_atomic(path: str | os.PathLike):
    """Yields a temporary path beside ``path``; renames it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes bytes to path via a temporary file and a rename."""
    with replace_atomic(path) as tmp:
        tmp.write_bytes(data)


def cached_json(path: str | os.PathLike, make):
    """The JSON in path if it is there; else make() written there atomically
    (how a multi-stage run skips the stages it has finished)."""
    import json

    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    result = make()
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    return result
