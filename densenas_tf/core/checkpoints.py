"""Resuming from checkpoints, for the search and the retraining alike.

A run resumes from its newest readable checkpoint. The checkpoints are found
by their files (and, for the search's ``tf.train`` checkpoints, by the index
file too), tried newest first; an unreadable one (a corrupt or half-written
file, one that does not fit the run) is logged with its reason and, once an
older one was restored, moved to ``ckpt/unreadable``. Checkpoint files of
which none is readable are refused (:class:`RunDirError`), and nothing is
moved: a run never starts over unasked. No TensorFlow here: the caller loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from densenas_tf.core.files import write_text_atomic
from densenas_tf.core.run_dir import (
    SEARCH_CHECKPOINT,
    SEARCH_CHECKPOINT_INDEX,
    TRAIN_CHECKPOINT,
    TRAIN_LEGACY_CHECKPOINT,
    UNREADABLE_DIR,
    RunDirError,
)

# How a tf.train.Checkpoint keys a variable's value: its path, then this.
VARIABLE_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def variable_key(*path: str) -> str:
    """The key of a checkpointed variable for ``tf.train.load_checkpoint``:
    ``variable_key("arch", "beta")`` for ``tf.train.Checkpoint(arch={"beta": v})``."""
    return "/".join(path) + VARIABLE_VALUE


def variables_in(keys: Iterable[str], scope: str) -> list[str]:
    """The names of the variables checkpointed as ``scope={name: variable}``,
    sorted, from a checkpoint's keys (``reader.get_variable_to_shape_map()``)."""
    names = (
        re.fullmatch(re.escape(scope) + r"/([^/]+)" + re.escape(VARIABLE_VALUE), k) for k in keys
    )
    return sorted(m.group(1) for m in names if m)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: ``number`` (the global step or the epochs done; the
    newest has the highest), ``path`` (what is loaded, and named in messages),
    ``files`` (set aside when it is unreadable; some may be missing) and
    ``rank`` (of two with one number, the higher is tried first)."""

    number: int
    path: Path
    files: tuple[Path, ...]
    rank: int = 0


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :func:`restore_newest` restored: the checkpoint, what ``load``
    returned for it, and the newer ones that were unreadable (moved to ``aside``)."""

    checkpoint: Checkpoint
    value: Any
    unreadable: tuple[Checkpoint, ...]
    aside: Path


def numbered_files(directory: str | os.PathLike, pattern: re.Pattern) -> dict[int, list[Path]]:
    """number -> the files in directory whose whole name ``pattern`` matches
    (its first group the number), sorted by name."""
    directory = Path(directory)
    found: dict[int, list[Path]] = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            match = pattern.fullmatch(path.name)
            if match:
                found.setdefault(int(match.group(1)), []).append(path)
    return found


def tf_checkpoints(directory: str | os.PathLike, indexed: Iterable[str] = ()) -> list[Checkpoint]:
    """The search's ``tf.train`` checkpoints in directory, oldest first: those
    with files (``ckpt-N.index``, ``ckpt-N.data-*``) and those named in
    ``indexed`` (a CheckpointManager's ``checkpoints``, read from its index)."""
    directory = Path(directory)
    files = numbered_files(directory, SEARCH_CHECKPOINT)
    numbers = set(files)
    for path in indexed:
        match = re.fullmatch(r"ckpt-(\d+)", Path(path).name)
        if match:
            numbers.add(int(match.group(1)))
    return [
        Checkpoint(n, directory / f"ckpt-{n}", tuple(files.get(n, ()))) for n in sorted(numbers)
    ]


def keras_checkpoints(directory: str | os.PathLike) -> list[Checkpoint]:
    """The retraining's checkpoints in directory, oldest first:
    ``epoch_NNN.keras`` with ``epoch_NNN.json`` (either present), and the one
    of runs written before, ``last.keras`` with ``progress.json`` (its number
    read from the progress file; -1, tried last, when that is unreadable).
    Of two of one epoch, the per-epoch files are tried first."""
    directory = Path(directory)
    found = []
    for number in numbered_files(directory, TRAIN_CHECKPOINT):
        files = epoch_files(directory, number)
        found.append(Checkpoint(number, files[0], files, rank=1))
    legacy = tuple(directory / name for name in TRAIN_LEGACY_CHECKPOINT)
    if any(p.exists() for p in legacy):
        try:
            epochs = int(json.loads(legacy[1].read_text())["epochs_done"])
        except Exception:
            epochs = -1
        found.append(Checkpoint(epochs, legacy[0], legacy))
    return sorted(found, key=lambda c: (c.number, c.rank))


def epoch_files(directory: str | os.PathLike, epochs_done: int) -> tuple[Path, Path]:
    """(model file, progress file) of the retraining's checkpoint after epochs_done epochs."""
    stem = Path(directory) / f"epoch_{epochs_done:03d}"
    return stem.with_suffix(".keras"), stem.with_suffix(".json")


def restore_newest(
    directory: str | os.PathLike,
    checkpoints: Sequence[Checkpoint],
    load: Callable[[Checkpoint], Any],
    *,
    job: str,
    log: Callable[[str], None],
    verb: str = "restore",
) -> Restored | None:
    """Calls ``load`` on the checkpoints, newest first, until one returns;
    None when there are none. A checkpoint ``load`` raises on is logged
    ("cannot {verb} {path}: {reason}; trying the checkpoint before it") and,
    once an older one loaded, its files are moved to ``directory/unreadable``.
    When none loads, RunDirError names each with its reason and says to delete
    the run directory (``directory``'s parent) to start this ``job`` over;
    nothing is moved then."""
    directory = Path(directory)
    failed: list[tuple[Checkpoint, str]] = []
    for checkpoint in sorted(checkpoints, key=lambda c: (c.number, c.rank), reverse=True):
        try:
            value = load(checkpoint)
        except Exception as err:  # a corrupt file fails in any of several ways
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            log(f"cannot {verb} {checkpoint.path}: {reason}; trying the checkpoint before it")
            failed.append((checkpoint, reason))
            continue
        unreadable = tuple(c for c, _ in failed)
        aside = directory / UNREADABLE_DIR
        set_aside(unreadable, aside)
        return Restored(checkpoint, value, unreadable, aside)
    if not failed:
        return None
    reasons = "; ".join(f"{c.path.name}: {reason}" for c, reason in failed)
    raise RunDirError(
        f"{directory} holds checkpoint files but none is readable ({reasons}); delete "
        f"{directory.parent} (or move it away) to start this {job} over"
    )


def set_aside(checkpoints: Iterable[Checkpoint], aside: str | os.PathLike) -> None:
    """Moves the files (those still there) of checkpoints into the folder aside."""
    aside = Path(aside)
    for path in sorted({p for c in checkpoints for p in c.files if p.exists()}):
        aside.mkdir(exist_ok=True)
        os.replace(path, aside / path.name)


def write_tf_index(directory: str | os.PathLike, restored: int) -> None:
    """Rewrites the index file (``checkpoint``) of the search's checkpoints so
    that it names ``ckpt-{restored}`` as the latest and every checkpoint up to
    it with files as kept, by the time their files were written; a
    ``tf.train.CheckpointManager`` made afterwards keeps (and in time deletes)
    them. The restored checkpoint's files must be there."""
    directory = Path(directory)
    kept = {
        number: max(p.stat().st_mtime for p in files)
        for number, files in numbered_files(directory, SEARCH_CHECKPOINT).items()
        if number <= restored
    }
    numbers = sorted(kept)
    lines = [f'model_checkpoint_path: "ckpt-{restored}"']
    lines += [f'all_model_checkpoint_paths: "ckpt-{n}"' for n in numbers]
    # The manager tracks (and in time deletes) checkpoints written after
    # last_preserved_timestamp only.
    lines += [f"all_model_checkpoint_timestamps: {kept[n]!r}" for n in numbers]
    lines.append(f"last_preserved_timestamp: {min(kept.values()) - 1.0!r}")
    write_text_atomic(directory / SEARCH_CHECKPOINT_INDEX, "\n".join(lines) + "\n")


# What tf.train leaves of a checkpoint it was writing when it failed or was
# stopped: the ckpt-N_temp folder of its shards and temporary state files.
PARTIAL_TF_CHECKPOINT = re.compile(r"ckpt-\d+_temp.*|ckpt-\d+\..*\.tempstate\d+")


def remove_partial_tf_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Deletes what a failed or stopped ``tf.train`` checkpoint write left in
    directory (``PARTIAL_TF_CHECKPOINT``); the finished checkpoints are not
    touched. Returns what was deleted."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if PARTIAL_TF_CHECKPOINT.fullmatch(path.name):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed
