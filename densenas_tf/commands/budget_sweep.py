r"""Re-derives one finished search under several latency budgets (no new
search) and times every net here.

  densenas-budget-sweep --run_dir=runs/search --targets_ms=0.15,0.2,0.25 \
      [--out_dir=runs/search/budget_sweep] [--rounds=5] [--runs=200]

Each budget gives the most probable net whose latency on the search's table
(run_dir/latency_table.json) is at most it; the paper's derivation is the
first row. Every net is timed as float TFLite (1 thread, batch 1) in
interleaved rounds. Prints a table and writes budget_sweep.json and
budget_sweep.md in --out_dir (default run_dir/budget_sweep). (In a checkout:
python tools/budget_sweep.py with the same flags.)
"""

import json
from pathlib import Path

from absl import app, flags

from densenas_tf import cli
from densenas_tf.core.files import write_text_atomic
from densenas_tf.experiments.stability import budget_sweep, format_budget_sweep

RUN_DIR = flags.DEFINE_string("run_dir", None, "Run directory of a search.", required=True)
TARGETS_MS = flags.DEFINE_list("targets_ms", None, "Budgets in ms, comma-separated.", required=True)
OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory (default run_dir/budget_sweep).")
ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.", lower_bound=1)
RUNS = flags.DEFINE_integer("runs", 200, "Timed runs per net per round.", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        targets = [float(t) for t in TARGETS_MS.value]
    except ValueError:
        raise app.UsageError(
            f"--targets_ms must be numbers in ms, got {TARGETS_MS.value}"
        ) from None
    bad = [t for t in targets if not t > 0]
    if bad:
        raise app.UsageError(f"--targets_ms must be positive, got {bad}")
    result = budget_sweep(RUN_DIR.value, targets, ROUNDS.value, RUNS.value)
    out = Path(OUT_DIR.value or Path(RUN_DIR.value) / "budget_sweep")
    out.mkdir(parents=True, exist_ok=True)
    text = format_budget_sweep(result)
    write_text_atomic(out / "budget_sweep.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "budget_sweep.md", text + "\n")
    print(text)
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
