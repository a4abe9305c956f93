"""The run-directory lock, now in :mod:`densenas_tf.core.run_dir` (which also
names what a run writes and decides what ``--overwrite`` may delete).

Kept so that ``from densenas_tf.core.run_lock import ...`` still works while
``search/searcher.py`` moves to ``core.run_dir``; new code imports that.
"""

from densenas_tf.core.run_dir import LOCK_NAME, RunDirError, locked_run_dir

__all__ = ["LOCK_NAME", "RunDirError", "locked_run_dir"]
