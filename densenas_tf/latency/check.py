"""Is a latency table this machine's? Checked on whole nets before a search uses it.

A table whose provenance names this kind of machine (the same device
description) is checked: a few whole nets of the space are built and measured
here, and the table is refused, with the command that rebuilds it, when its
predictions miss by more than ``MAX_MAPE_PERCENT`` on average. A table of
another device (a phone, a GPU) cannot be checked here and is used as it is:
the search then optimises that device's latency, and says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from densenas_tf.latency.measure import device_description
from densenas_tf.latency.report import additivity_report
from densenas_tf.latency.table import LatencyTable, LatencyTableError
from densenas_tf.space.spaces import SearchSpace

MAX_MAPE_PERCENT = 10.0


def check_table_here(
    space: SearchSpace,
    table: LatencyTable,
    table_path: str,
    num_nets: int = 3,
    seed: int = 0,
    warmup: int = 10,
    runs: int = 50,
    max_mape: float = MAX_MAPE_PERCENT,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Checks ``table`` against ``num_nets`` random nets of ``space`` measured
    here; returns what was found; raises LatencyTableError when it misses."""

    here = device_description()
    measured_on = table.provenance.get("device", "an unnamed device")
    if measured_on != here:
        log(
            f"latency table {table_path} was measured on {measured_on!r}, not on this machine "
            f"({here!r}): the search optimises that device's latency, unchecked here"
        )
        return {"checked": False, "device": measured_on, "this_machine": here}
    log(f"checking latency table {table_path} against {num_nets} whole nets measured here")
    report = additivity_report(
        space,
        table,
        num_random=num_nets,
        seed=seed,
        warmup=warmup,
        runs=runs,
        log=log,
        include_reference=False,
    )
    result = {
        "checked": True,
        "device": here,
        "nets": report["n_paths"],
        "mape_percent": report["mape_percent"],
        "max_mape_percent": max_mape,
        "rows": report["rows"],
    }
    if report["mape_percent"] > max_mape:
        prov = table.provenance
        raise LatencyTableError(
            f"latency table {table_path} predicts whole nets measured on this machine with "
            f"{report['mape_percent']:.1f} % mean error (over {report['n_paths']} nets; at most "
            f"{max_mape:g} % is accepted): it no longer describes this machine. Rebuild it: "
            f"python tools/build_lut.py --space={space.name} --backend={prov.get('backend')} "
            f"--threads={prov.get('threads')} --batch_size={prov.get('batch_size')} "
            f"--out=NEW_TABLE.json, then search with --override=latency_table=NEW_TABLE.json "
            "(or skip this check with --override=latency_check=false)"
        )
    log(
        f"latency table {table_path}: {report['mape_percent']:.1f} % mean error over "
        f"{report['n_paths']} nets measured here (at most {max_mape:g} % accepted)"
    )
    return result
