"""The binaries: each module here is one command (its absl flags and its
``main``), run by the console scripts ``densenas-*`` of an installed package
and by the thin wrappers in ``tools/`` and ``export/`` of a checkout. A
command module defines absl flags when imported, so a process imports one.

Importing this package prepares the process as a binary
(``densenas_tf.prepare_binary``: oneDNN kernels on, TensorFlow's C++ log
quiet) before a command module imports TensorFlow; the library itself
changes no environment.

Layer 7: commands import anything below, and nothing imports them.
"""

import densenas_tf as _package

_package.prepare_binary()
