"""The binaries: each module here is one command (its absl flags and its
``main``), run by the console scripts ``densenas-*`` of an installed package
and by the thin wrappers in ``tools/`` and ``export/`` of a checkout. A
command module defines absl flags when imported, so a process imports one.

Layer 7: commands import anything below, and nothing imports them.
"""
