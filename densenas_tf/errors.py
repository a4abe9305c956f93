"""The one base class of the errors a user can act on.

Every error the package raises for bad input or a fault outside the code (a
bad config, data that do not fit the space, a corrupt file, a full disk, a
locked run directory) derives from :class:`DenseNASError` and says in one line
what is wrong and how to fix it. The binaries catch it once, in
:func:`densenas_tf.cli.main`, print ``error: <message>`` and exit with the
error's ``exit_code``.
"""

from __future__ import annotations


class DenseNASError(Exception):
    """Bad input or an outside fault, with a message that names the fix."""

    exit_code = 1
