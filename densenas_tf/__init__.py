"""densenas_tf: DenseNAS (densely connected search space, path-level latency-aware
architecture search) in TensorFlow 2 / Keras 3.

Importing the package before TensorFlow turns on TensorFlow's oneDNN CPU kernels
(``TF_ENABLE_ONEDNN_OPTS=1``), which TensorFlow enables by default only on some
x86 CPUs (those with AVX-512); the README's "Speed" section measures what they
are worth on a CPU without it. Set ``TF_ENABLE_ONEDNN_OPTS=0``
to keep TensorFlow's own kernels; once TensorFlow is imported the setting can no
longer change, and ``ONEDNN_SET_HERE`` tells whether this package set it.
"""

import os as _os
import sys as _sys

ONEDNN_FLAG = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_SET_HERE = ONEDNN_FLAG not in _os.environ and "tensorflow" not in _sys.modules
if ONEDNN_SET_HERE:
    _os.environ[ONEDNN_FLAG] = "1"
