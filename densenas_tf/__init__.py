"""densenas_tf: DenseNAS (densely connected search space, path-level latency-aware
architecture search) in TensorFlow 2 / Keras 3.

Importing the package changes nothing in the process. The binaries (the
``densenas-*`` commands, ``tools/*.py``) call :func:`prepare_binary` before
TensorFlow is imported: it turns on TensorFlow's oneDNN CPU kernels
(``TF_ENABLE_ONEDNN_OPTS=1``), which TensorFlow enables by default only on
some x86 CPUs (those with AVX-512); the README's "Speed" section measures
what they are worth on a CPU without it. Set ``TF_ENABLE_ONEDNN_OPTS=0`` to
keep TensorFlow's own kernels; a library user who wants oneDNN sets
``TF_ENABLE_ONEDNN_OPTS=1`` (or calls :func:`prepare_binary`) before importing
TensorFlow. ``ONEDNN_SET_HERE`` tells whether this package set it.
"""

import os as _os
import sys as _sys

ONEDNN_FLAG = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_SET_HERE = False


def prepare_binary() -> None:
    """What a binary sets for its own process before TensorFlow is imported:
    TensorFlow's C++ log quiet below warnings (``TF_CPP_MIN_LOG_LEVEL=2``) and
    oneDNN kernels on, each unless the user set it; oneDNN only while
    TensorFlow is not imported yet (afterwards the setting can no longer
    change)."""

    global ONEDNN_SET_HERE
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if ONEDNN_FLAG not in _os.environ and "tensorflow" not in _sys.modules:
        _os.environ[ONEDNN_FLAG] = "1"
        ONEDNN_SET_HERE = True
