"""Is a latency table this machine's? Checked on whole nets before a search uses it.

A table whose provenance names this kind of machine (the same device
description) is checked: a few random whole nets of the space are built and
timed here, interleaved in rounds (each round times every net once), and each
net's figure is the least of its round medians: other processes can slow a
round down but not speed it up, so the least is the figure of the quietest
moment, as a table's entries are taken. The table is refused, with the command
that rebuilds it, when its predictions miss by more than ``MAX_MAPE_PERCENT``
on average; the refusal says how far the rounds spread, that is how noisy the
machine was. A table of another device (a phone, a GPU) cannot be checked here
and is used as it is: the search then optimises that device's latency, and
says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from densenas_tf.latency.measure import arch_timer, device_description, vector_isa
from densenas_tf.latency.report import mape_percent, random_arch
from densenas_tf.latency.table import LatencyTable, LatencyTableError, quantization_of
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace

MAX_MAPE_PERCENT = 10.0


def check_table_here(
    space: SearchSpace,
    table: LatencyTable,
    table_path: str,
    num_nets: int = 5,
    seed: int = 0,
    warmup: int = 10,
    runs: int = 30,
    rounds: int = 3,
    max_mape: float = MAX_MAPE_PERCENT,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    nets: list[ArchSpec] | None = None,
) -> dict[str, Any]:
    """Checks ``table`` against ``num_nets`` random nets of ``space`` (or the
    given ``nets``) timed here in ``rounds`` interleaved rounds of ``runs``
    runs; returns what was found; raises LatencyTableError when it misses."""

    here = device_description()
    measured_on = table.provenance.get("device", "an unnamed device")
    isa = table.provenance.get("vector_isa")
    if isa is not None and measured_on == here and isa != vector_isa():
        # One model name, other vector instructions: another device for latency.
        here, measured_on = f"{here}, {vector_isa()}", f"{measured_on}, {isa}"
    if measured_on != here:
        log(
            f"latency table {table_path} was measured on {measured_on!r}, not on this machine "
            f"({here!r}): the search optimises that device's latency, unchecked here"
        )
        return {"checked": False, "device": measured_on, "this_machine": here}
    table.check_space(space)
    prov = table.provenance
    log(
        f"checking latency table {table_path} against {num_nets} whole nets timed here "
        f"({rounds} interleaved rounds)"
    )
    quantization = quantization_of(table)
    if nets is None:
        rng = np.random.default_rng(seed)
        nets = [random_arch(space, rng, f"random_{i}") for i in range(num_nets)]
    num_nets = len(nets)
    timers = [
        arch_timer(spec, prov["backend"], prov["threads"], prov["batch_size"], warmup, quantization)
        for spec in nets
    ]
    medians = np.zeros((num_nets, rounds))
    for r in range(rounds):
        for i, timer in enumerate(timers):
            medians[i, r] = timer(runs)
    measured = medians.min(axis=1)
    predicted = np.array([table.predicted_ms(spec) for spec in nets])
    spread = 100.0 * (medians.max(axis=1) / measured - 1.0)
    error = mape_percent(predicted, measured)
    noise = (
        f"the rounds of one net differed by up to {spread.max():.0f} % "
        f"(median {np.median(spread):.0f} %)"
    )
    result = {
        "checked": True,
        "device": here,
        "nets": num_nets,
        "rounds": rounds,
        "mape_percent": error,
        "max_mape_percent": max_mape,
        "round_spread_percent": {"max": float(spread.max()), "median": float(np.median(spread))},
        "rows": [
            {
                "name": spec.name,
                "arch": spec.to_block_string(),
                "predicted_ms": float(p),
                "measured_ms": float(m),
                "round_medians_ms": [float(x) for x in row],
            }
            for spec, p, m, row in zip(nets, predicted, measured, medians)
        ],
    }
    if error > max_mape:
        refusal = LatencyTableError(
            f"latency table {table_path} predicts whole nets timed on this machine with "
            f"{error:.1f} % mean error (over {num_nets} nets, each the least of {rounds} "
            f"interleaved rounds; at most {max_mape:g} % is accepted; {noise}): it no longer "
            "describes this machine. Rebuild it: "
            f"densenas-build-lut --space={space.name} --backend={prov.get('backend')} "
            f"--threads={prov.get('threads')} --batch_size={prov.get('batch_size')} "
            f"{'' if quantization == 'none' else f'--quantization={quantization} '}"
            f"--out=NEW_TABLE.json, then search with --latency_table=NEW_TABLE.json "
            "(or skip this check with --override=latency_check=false)"
        )
        refusal.check = result  # what was timed: scaled_to_this_machine can use it
        raise refusal
    log(
        f"latency table {table_path}: {error:.1f} % mean error over {num_nets} nets timed here "
        f"(at most {max_mape:g} % accepted; {noise})"
    )
    return result


def scaled_to_this_machine(
    table: LatencyTable, check: dict[str, Any], max_mape: float = MAX_MAPE_PERCENT
) -> tuple[LatencyTable, dict[str, Any]] | None:
    """The table scaled by one factor to the whole nets timed by a failed
    ``check_table_here`` (its ``check``), when that brings them within
    ``max_mape``; else None.

    A table of this kind of machine that misses whole nets timed here mostly
    misses by one factor when the machine runs slower or faster as a whole
    (another host under the same name, a busier hour): each op's share of a
    net stays what the table says. The factor is the median of measured over
    predicted; the scaled table must then pass the same check on the same
    nets, so a table whose ops are off by different amounts is still refused.
    Returns the scaled table (its provenance records the factor, the source
    and both errors) and a summary of the fit."""

    rows = check.get("rows") or []
    if not rows:
        return None
    predicted = np.array([r["predicted_ms"] for r in rows], dtype=np.float64)
    measured = np.array([r["measured_ms"] for r in rows], dtype=np.float64)
    factor = float(np.median(measured / predicted))
    error = mape_percent(factor * predicted, measured)
    fit = {
        "factor": factor,
        "mape_percent_before": float(check["mape_percent"]),
        "mape_percent_after": error,
        "max_mape_percent": max_mape,
        "nets": len(rows),
    }
    if not np.isfinite(factor) or factor <= 0 or error > max_mape:
        return None
    provenance = dict(table.provenance)
    provenance["scaled"] = {"from": str(table.path) if table.path else None, **fit}
    scaled = LatencyTable(
        provenance=provenance,
        entries={key: entry.scaled(factor) for key, entry in table.entries.items()},
        overhead_ms=table.overhead_ms * factor,
    )
    return scaled, fit
