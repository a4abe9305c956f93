"""What the search and the retraining both use at run time: the progress bar
and the distribution strategy by name."""

from __future__ import annotations

import sys
import time

STRATEGIES = ("default", "mirrored", "multi_worker")


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
    """A one-line progress bar with ETA on stderr."""

    def __init__(self, label: str, total: int, start_at: int = 0, stream=sys.stderr):
        self.label, self.total, self.done = label, total, start_at
        self.first, self.start, self.stream = start_at, time.time(), stream

    def update(self, metrics: dict[str, float]) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        per_step = elapsed / max(self.done - self.first, 1)
        eta = per_step * (self.total - self.done)
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = (
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{per_step:.2f} s/step ETA {eta:.0f} s {shown}"
        )
        self.stream.write(line[:200])
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
