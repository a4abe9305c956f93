"""What the search and the retraining both use at run time: the progress bar
and the distribution strategy by name."""

from __future__ import annotations

import sys
import time

STRATEGIES = ("default", "mirrored", "multi_worker")

# (label, steps done, total) of the progress line this process drew last, so
# that a binary stopped by Ctrl-C can say where it stopped.
_LAST_PROGRESS: list[tuple[str, int, int] | None] = [None]


def last_progress() -> tuple[str, int, int] | None:
    """(label, steps done, total) of the last progress line, or None."""
    return _LAST_PROGRESS[0]


def make_strategy(name: str):
    """A tf.distribute strategy by name (see STRATEGIES)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; strategies are {STRATEGIES}")


class Progress:
    """Progress with ETA on stderr: one line redrawn in place on a terminal; on a
    file or pipe (a log), a whole line every ``log_every`` seconds and at the end,
    so logs stay readable."""

    def __init__(
        self,
        label: str,
        total: int,
        start_at: int = 0,
        stream=sys.stderr,
        log_every: float = 30.0,
        clock=time.time,
    ):
        self.label, self.total, self.done = label, total, start_at
        self.first, self.stream, self.clock = start_at, stream, clock
        self.start = self.last_line = clock()
        self.log_every = log_every
        isatty = getattr(stream, "isatty", None)
        self.in_place = bool(isatty and isatty())
        _LAST_PROGRESS[0] = (label, start_at, total)

    def update(self, metrics: dict[str, float]) -> None:
        self.done += 1
        _LAST_PROGRESS[0] = (self.label, self.done, self.total)
        now = self.clock()
        per_step = (now - self.start) / max(self.done - self.first, 1)
        eta = per_step * (self.total - self.done)
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{per_step:.2f} s/step ETA {eta:.0f} s {shown}"
        )[:200]
        finished = self.done >= self.total
        if self.in_place:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        elif finished or now - self.last_line >= self.log_every:
            self.stream.write(line + "\n")
            self.last_line = now
        self.stream.flush()
