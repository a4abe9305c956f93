r"""Times several nets here, side by side, as float and/or int8 TFLite.

  densenas-time-nets --arch=runs/a/arch.json --arch=runs/b/arch.json \
      [--quantization=none,int8] [--rounds=5] [--runs=200] [--latency_table=T.json ...]

Each ArchSpec (a file, or a shipped architecture's name) is built, converted
(int8 as the exporter quantizes a net) and timed with 1 thread, batch 1, in
interleaved rounds: each round times every net once, so load on the machine
falls on all alike. Prints each net's median over rounds, and with
--latency_table the latency each table predicts for it. (In a checkout: python
tools/time_nets.py; --table is the old spelling of --latency_table.)
"""

import sys

import numpy as np
from absl import app, flags

from densenas_tf import cli
from densenas_tf.experiments.stability import time_nets
from densenas_tf.latency.table import LatencyTable, LatencyTableError
from densenas_tf.space.arch_spec import load_arch

ARCH = flags.DEFINE_multi_string("arch", [], "ArchSpec JSON file or shipped name (repeat).")
QUANTIZATION = flags.DEFINE_list("quantization", ["none"], "none and/or int8, comma-separated.")
ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.", lower_bound=1)
RUNS = flags.DEFINE_integer("runs", 200, "Timed runs per net per round.", lower_bound=1)
TABLE = flags.DEFINE_multi_string(
    "latency_table", [], "Latency tables whose predictions to show (repeat)."
)
cli.deprecated_alias("table", TABLE)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not ARCH.value:
        raise app.UsageError("give at least one --arch")
    bad = [q for q in QUANTIZATION.value if q not in ("none", "int8")]
    if bad:
        raise app.UsageError(f"--quantization takes none and int8, got {bad}")
    specs = {f"{i}:{name}": load_arch(name) for i, name in enumerate(ARCH.value)}
    tables = {path: LatencyTable.load(path) for path in TABLE.value}
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    timed = {
        q: time_nets(specs, ROUNDS.value, RUNS.value, log, quantization=q)
        for q in QUANTIZATION.value
    }
    notes: list[str] = []
    header = ["net"] + [f"{'float' if q == 'none' else q} ms" for q in timed]
    header += [f"predicted ({path})" for path in tables]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key, spec in specs.items():
        cells = [key.split(":", 1)[1]]
        cells += [f"{float(np.median(timed[q][key])):.3f}" for q in timed]
        cells += [_predicted(t, spec, notes) for t in tables.values()]
        print("| " + " | ".join(cells) + " |")
    for note in notes:
        print(note)
    return 0


def _predicted(table: LatencyTable, spec, notes: list[str]) -> str:
    """The table's prediction for the net, or "-" (with a note) when it lacks
    the net's pieces (a net of another space, e.g. MobileNetV2 beside searched nets)."""
    try:
        return f"{table.predicted_ms(spec):.3f}"
    except LatencyTableError as err:
        notes.append(f"- {spec.name} on {table.path}: {str(err).splitlines()[0]}")
        return "-"


def run() -> None:
    cli.run(__name__, main, interrupted="nothing was written; re-run the same command")


if __name__ == "__main__":
    run()
