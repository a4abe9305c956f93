r"""The additivity report: predicted (table sum) against measured latency of whole nets.

  densenas-lut-report --space=fashion_mnist \
      --latency_table=configs/latency/fashion_mnist_tflite_t1_b1.json --num_random=30 \
      --plot=docs/lut_fashion_mnist.png [--json]

Prints a table (or, with --json, one JSON object with mape_percent, spearman
and n_paths) and writes a scatter plot when --plot is given. An unwritable
--plot location is refused before any timing.

  densenas-lut-report --space=fashion_mnist --latency_table=A.json --against=B.json

compares two tables of the space entry by entry, timing nothing: the median
and spread of the ratios A/B, the farthest entries, the keys only one has
(e.g. a table imported from a bundle against one build_lut.py measured).
(In a checkout: python tools/lut_report.py; --table is the old spelling of
--latency_table.)
"""

import json

from absl import app, flags

from densenas_tf import cli
from densenas_tf.latency.measure import pin_threads
from densenas_tf.latency.report import (
    additivity_report,
    check_writable,
    compare_tables,
    format_comparison,
    format_report,
    plot_report,
)
from densenas_tf.latency.table import LatencyTable, default_table_path
from densenas_tf.space.spaces import load_space

SPACE = flags.DEFINE_string(
    "space", None, "Search-space preset name or YAML/JSON file.", required=True
)
TABLE = flags.DEFINE_string(
    "latency_table", None, "Latency table (default: the shipped tflite/1-thread/batch-1 table)."
)
NUM_RANDOM = flags.DEFINE_integer("num_random", 20, "Random paths to measure.", lower_bound=0)
SEED = flags.DEFINE_integer("seed", 0, "Seed of the random paths.")
WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed runs per net.", lower_bound=0)
RUNS = flags.DEFINE_integer("runs", 100, "Timed runs per net.", lower_bound=1)
AGAINST = flags.DEFINE_string(
    "against", None, "Compare --latency_table with this table entry by entry (no timing)."
)
PLOT = flags.DEFINE_string("plot", None, "Write a predicted-vs-measured scatter plot (PNG) here.")
JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
cli.deprecated_alias("table", TABLE)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if PLOT.value:
        check_writable(PLOT.value)  # now, not after the timing
    space = load_space(SPACE.value)
    table = LatencyTable.load(TABLE.value or default_table_path(space.name))
    if AGAINST.value:
        other = LatencyTable.load(AGAINST.value)
        table.check_space(space, SPACE.value)
        other.check_space(space, SPACE.value)
        comparison = compare_tables(table, other)
        print(json.dumps(comparison) if JSON.value else format_comparison(comparison))
        return 0
    pin_threads(table.provenance["threads"])
    report = additivity_report(
        space,
        table,
        NUM_RANDOM.value,
        SEED.value,
        WARMUP.value,
        RUNS.value,
        space_source=SPACE.value,
    )
    if PLOT.value:
        plot_report(report, PLOT.value)
    print(json.dumps(report) if JSON.value else format_report(report))
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
