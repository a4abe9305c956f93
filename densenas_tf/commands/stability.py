r"""One search config over several seeds: how far the derived nets' latency
spreads, whether they meet a budget, and how many decisions agree.

  densenas-stability --out_dir=runs/stability --seeds=0,1,2 \
      [--config=fashion_mnist_quick] [--target_ms=0.25 | --budget_width=0.75] \
      [--override=objective.steer=absolute ...] [--latency_table=FILE]

Searches (or resumes) one run per seed in OUT_DIR/seed_<s>, times each derived
net here as float TFLite (1 thread, batch 1, interleaved rounds) and writes
OUT_DIR/stability.json and stability.md (printed too). Without
--latency_table the table is measured on this machine first (cached in
OUT_DIR/latency). --budget_width takes as the budget the latency of
MobileNetV2 at that width measured here (cached in OUT_DIR/budget.json).
Re-running the command resumes where it stopped. (In a checkout: python
tools/stability.py with the same flags.)
"""

from absl import app, flags

from densenas_tf import cli
from densenas_tf.experiments.stability import StabilityPlan, format_stability, run_stability

OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Output directory (one run per seed).", required=True
)
CONFIG = flags.DEFINE_string("config", "fashion_mnist_quick", "Search config preset or file.")
OVERRIDE = flags.DEFINE_multi_string("override", [], "Search config overrides, key=value.")
SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, comma-separated.")
TARGET_MS = flags.DEFINE_float("target_ms", None, "Latency budget in ms.")
BUDGET_WIDTH = flags.DEFINE_float(
    "budget_width", None, "Budget: MobileNetV2 at this width, measured here (e.g. 0.75)."
)
LATENCY_TABLE = flags.DEFINE_string(
    "latency_table", None, "Latency table (default: measured here first)."
)
LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 200, "Timed runs per net per round.")
LATENCY_ROUNDS = flags.DEFINE_integer("latency_rounds", 5, "Interleaved timing rounds.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if TARGET_MS.value is not None and BUDGET_WIDTH.value is not None:
        raise app.UsageError("give --target_ms or --budget_width, not both")
    try:
        seeds = tuple(int(s) for s in SEEDS.value)
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, got {SEEDS.value}") from None
    plan = StabilityPlan(
        search_config=CONFIG.value,
        search_overrides=tuple(OVERRIDE.value),
        seeds=seeds,
        target_ms=TARGET_MS.value,
        budget_width=BUDGET_WIDTH.value,
        latency_table=LATENCY_TABLE.value,
        latency_runs=LATENCY_RUNS.value,
        latency_rounds=LATENCY_ROUNDS.value,
    )
    print(format_stability(run_stability(OUT_DIR.value, plan)))
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
