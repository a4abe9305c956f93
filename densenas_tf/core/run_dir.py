"""Run directories: what a search or a retraining writes there, whose directory
is whose, what ``--overwrite`` may delete, and one process per directory.

Every file and folder a run of each kind writes is named here (:data:`LAYOUTS`).
A run marks its directory when it starts: ``.densenas_run.json``, the kind
of run inside, written atomically. A directory is a run's by that marker or,
for runs written before the marker existed, by the legacy signature (the
kind's config file) when every entry in it is one that kind of run writes.
Deleting a run (:func:`delete_run`) removes only the entries named here and
refuses, deleting nothing, a directory that holds anything else; a directory
that is no run at all is never offered ``--overwrite``.

The search and the retraining take ``run_dir/.lock`` (``fcntl.flock``, the
holder's pid written inside) before they write or delete anything in their
run directory. The kernel drops the lock when its process exits, also on a
crash or a kill, so a stale lock never blocks a new run. The lock file is
never deleted, not even by ``--overwrite``: a second process could otherwise
lock a new file of the same name while the first still holds the old one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import write_text_atomic

LOCK_NAME = ".lock"
MARKER_NAME = ".densenas_run.json"
SEARCH, TRAIN = "search", "train"
# How messages name a run of each kind.
RUN_NAMES = {SEARCH: "search run", TRAIN: "training run"}
# The config file each kind writes first: the signature of a run written
# before the marker existed.
CONFIG_FILES = {SEARCH: "config.json", TRAIN: "train_config.json"}

# Checkpoints (run_dir/ckpt) and where unreadable ones are set aside.
CHECKPOINT_DIR = "ckpt"
UNREADABLE_DIR = "unreadable"
# The search's tf.train checkpoint N (N: the global step it was saved at) and its index file.
SEARCH_CHECKPOINT = re.compile(r"ckpt-(\d+)\.(?:index|data-\d+-of-\d+)")
SEARCH_CHECKPOINT_INDEX = "checkpoint"
# The retraining's checkpoint after epoch N: epoch_NNN.keras (the whole training
# state) with epoch_NNN.json (the progress); runs written before kept one
# checkpoint, last.keras with progress.json.
TRAIN_CHECKPOINT = re.compile(r"epoch_(\d+)\.(?:keras|json)")
TRAIN_LEGACY_CHECKPOINT = ("last.keras", "progress.json")


class RunDirError(DenseNASError, ValueError):
    """A run directory that holds another run, is in use, or cannot be resumed."""


@dataclasses.dataclass(frozen=True)
class Folder:
    """What the package writes in one folder: files (full-match patterns) and
    folders (name -> their contents). ``written_whole`` are patterns of folders
    another library writes and removes on its own (their contents unchecked)."""

    files: tuple[str, ...] = ()
    folders: Mapping[str, Folder] = dataclasses.field(default_factory=dict)
    written_whole: tuple[str, ...] = ()

    def has_file(self, name: str) -> bool:
        return any(re.fullmatch(p, name) for p in self.files) or _leftover(self, name)

    def has_whole(self, name: str) -> bool:
        return any(re.fullmatch(p, name) for p in self.written_whole)


def _leftover(folder: Folder, name: str) -> bool:
    """Whether name is what ``core.files.replace_atomic`` leaves of one of the
    folder's files when its process dies mid-write (``.NAME.tmp-PID``,
    ``.NAME.old-PID``, ``.STEM.tmp-PID.SUFFIX``)."""
    match = re.fullmatch(r"\.(.+)\.(?:tmp|old)-\d+(\.\w+)?", name)
    if match is None:
        return False
    base, suffix = match.group(1), match.group(2) or ""
    return any(re.fullmatch(p, n) for p in folder.files for n in {base + suffix, base})


_EVENTS = Folder(files=(r"events\.out\.tfevents\..+",))
_SEARCH_CHECKPOINTS = Folder(
    files=(
        SEARCH_CHECKPOINT.pattern,
        SEARCH_CHECKPOINT_INDEX,
        # What tf.train leaves of an index or a checkpoint it was writing.
        r"checkpoint\.tmp[0-9a-f]+",
        SEARCH_CHECKPOINT.pattern + r"\.tempstate\d+",
    ),
    written_whole=(r"ckpt-\d+_temp.*",),
)
_TRAIN_CHECKPOINTS = Folder(
    files=(TRAIN_CHECKPOINT.pattern, *map(re.escape, TRAIN_LEGACY_CHECKPOINT))
)
_RUN_FILES = (re.escape(LOCK_NAME), re.escape(MARKER_NAME))

# Everything a run of each kind writes in its run directory.
LAYOUTS = {
    SEARCH: Folder(
        files=(
            *_RUN_FILES,
            r"config\.json",  # the search config
            r"space\.json",  # the search space searched
            r"latency_table\.json",  # the latency table it optimised
            r"latency_table\.until_epoch\d+\.json",  # the table before a change (accepted)
            r"latency_table_changes\.json",  # when the table changed, and how
            r"latency_check\.json",  # the table's check on this machine
            r"arch\.json",  # the derived architecture
            r"arch_best\d+\.json",  # the best epochs' architectures
            r"summary\.json",  # written last: the run is finished
        ),
        folders={
            CHECKPOINT_DIR: dataclasses.replace(
                _SEARCH_CHECKPOINTS, folders={UNREADABLE_DIR: _SEARCH_CHECKPOINTS}
            ),
            "tensorboard": _EVENTS,
            "archs": Folder(files=(r"epoch_\d+\.json",)),  # each epoch's derived net
            "reports": Folder(files=(r"epoch_\d+\.json",)),  # each epoch's report
            "pictures": Folder(files=(r"epoch_\d+\.png",)),  # each epoch's supernet
        },
    ),
    TRAIN: Folder(
        files=(
            *_RUN_FILES,
            r"train_config\.json",  # architecture, training config and data
            r"model\.keras",  # the trained model: the run is finished
            r"metrics\.json",  # its test accuracy and history
        ),
        folders={
            CHECKPOINT_DIR: dataclasses.replace(
                _TRAIN_CHECKPOINTS, folders={UNREADABLE_DIR: _TRAIN_CHECKPOINTS}
            ),
            "tensorboard": _EVENTS,
        },
    ),
}
# The files whose presence says a training run finished.
TRAIN_FINISHED = ("model.keras", "metrics.json")


# ----- the lock ---------------------------------------------------------------------------


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


# ----- whose directory ----------------------------------------------------------------------


def foreign_entries(run_dir: str | os.PathLike, kind: str) -> list[str]:
    """The entries of run_dir (paths relative to it, folders ending in "/")
    that a run of ``kind`` never writes; symlinks are never a run's."""
    return _foreign(Path(run_dir), LAYOUTS[kind], "")


def _foreign(folder: Path, layout: Folder, prefix: str) -> list[str]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if entry.is_symlink():
            found.append(prefix + name)
        elif entry.is_dir():
            if name in layout.folders:
                found += _foreign(entry, layout.folders[name], f"{prefix}{name}/")
            elif not (layout.has_whole(name) or _leftover(layout, name)):
                found.append(f"{prefix}{name}/")
        elif not layout.has_file(name):
            found.append(prefix + name)
    return found


def marked_kind(run_dir: str | os.PathLike) -> str | None:
    """The kind of run the marker in run_dir names (None: no readable marker)."""
    try:
        kind = json.loads((Path(run_dir) / MARKER_NAME).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in LAYOUTS else None


def run_kind(run_dir: str | os.PathLike) -> str | None:
    """The kind of run run_dir holds: by its marker; else (a run written before
    the marker) by its kind's config file, when every entry in it is one that
    kind writes; else None (empty, missing, or no run's)."""
    run_dir = Path(run_dir)
    kind = marked_kind(run_dir)
    if kind is not None or not run_dir.is_dir():
        return kind
    for kind, config in CONFIG_FILES.items():
        if (run_dir / config).is_file() and not foreign_entries(run_dir, kind):
            return kind
    return None


def claim(run_dir: str | os.PathLike, kind: str) -> None:
    """Marks run_dir as a run of ``kind`` (when it is not marked so already)."""
    if marked_kind(run_dir) != kind:
        record = {"kind": kind, "written_by": "densenas_tf"}
        write_text_atomic(Path(run_dir) / MARKER_NAME, json.dumps(record) + "\n")


def _names(entries: list[str], most: int = 8) -> str:
    shown = ", ".join(entries[:most])
    return shown + (f" and {len(entries) - most} more" if len(entries) > most else "")


def check_kind(run_dir: str | os.PathLike, kind: str) -> None:
    """Refuses a run directory that holds a run of another kind."""
    found = run_kind(run_dir)
    if found is not None and found != kind:
        raise RunDirError(
            f"{run_dir} holds a {RUN_NAMES[found]}, not a {RUN_NAMES[kind]}; pick another --run_dir"
        )


def check_replaceable(run_dir: str | os.PathLike, kind: str) -> None:
    """Before a run replaces the one with another config in run_dir: refuses a
    directory that is no run of ``kind`` (its config file beside files no such
    run writes); a directory that is no run is never offered --overwrite."""
    check_kind(run_dir, kind)
    if run_kind(run_dir) is None:
        entries = foreign_entries(run_dir, kind)
        raise RunDirError(
            f"{run_dir} is not a {RUN_NAMES[kind]} directory: beside {CONFIG_FILES[kind]} it "
            f"holds files no {RUN_NAMES[kind]} writes ({_names(entries)}); pick another --run_dir"
        )


def overwrite_hint(run_dir: str | os.PathLike, kind: str) -> str:
    """How a refusal of the run in run_dir says --overwrite would delete it:
    first naming the files that would stop it, if any."""
    entries = foreign_entries(run_dir, kind)
    moved = f"move {_names(entries)} out of it and " if entries else ""
    return f"{moved}pass --overwrite to delete it"


def delete_run(run_dir: str | os.PathLike, kind: str) -> None:
    """Deletes the run of ``kind`` in run_dir (call it holding the lock): every
    entry but the lock and the marker, all of them ones such a run writes.
    Anything else in run_dir is refused, naming it, and nothing is deleted."""
    check_kind(run_dir, kind)
    run_dir = Path(run_dir)
    entries = foreign_entries(run_dir, kind)
    if entries:
        raise RunDirError(
            f"{run_dir} holds files no {RUN_NAMES[kind]} writes ({_names(entries)}); move them "
            "out of it, or use another --run_dir"
        )
    for entry in run_dir.iterdir():
        if entry.name in (LOCK_NAME, MARKER_NAME):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
