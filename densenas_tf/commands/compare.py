"""The paper's Fig. 5 experiment on Fashion-MNIST: DenseNAS against a fixed-block
search, MobileNetV2-style nets and keras-tuner random search, at equal latency.

  densenas-compare --run_dir=runs/compare [--reduced] [--train_epochs=N]
      [--seeds=3 --lams=0.15 --mbv2_widths=0.5,0.75] [--out_dir=docs/results]
  densenas-compare --equal_latency --run_dir=runs/equal_latency [--seeds=3]
      [--mbv2_widths=0.5,0.75,1.0] [--out_dir=docs/results_equal_latency]

(In a checkout: python tools/compare.py; --results_dir is the old spelling of --out_dir.)

--equal_latency compares at equal latency: the budgets are MobileNetV2's
measured latencies at --mbv2_widths; per budget and seed, DenseNAS searched
to the budget, random search within [0.9, 1.0] x the budget with one search's
compute, MobileNetV2 at that width, and at the middle budget the fixed-block
search; with the two-standard-error verdict per budget. --report_only
writes the report of the seeds finished so far from the run's records,
running nothing. --held_min_fractions=0.9,0.95 re-derives the run's DenseNAS
searches (from their checkpoints, or the nets an earlier budget_held.json in
the run directory holds for them) at each min_fraction and times the nets
with MobileNetV2: how the band's lower edge moves the measured latency.

Every net is retrained with the same recipe and seed, tested, and timed as
float TFLite (1 thread, batch 1). Each stage is cached in the run directory, so
re-running resumes. --reduced runs the whole pipeline in minutes (tiny
schedules; its numbers say nothing about the methods).
"""

import dataclasses
import shutil
import sys
from pathlib import Path

from absl import app, flags

from densenas_tf import cli
from densenas_tf.experiments import compare, equal_latency

RUN_DIR = flags.DEFINE_string("run_dir", "runs/compare", "Run directory.")
REDUCED = flags.DEFINE_bool("reduced", False, "Tiny schedules, for a check of the pipeline.")
EQUAL_LATENCY = flags.DEFINE_bool(
    "equal_latency", False, "Compare at equal latency: budgets from MobileNetV2's widths."
)
TRAIN_EPOCHS = flags.DEFINE_integer(
    "train_epochs", None, "Retraining epochs per net (default: the plan's, 3; 1 with --reduced)."
)
RANDOM_MAX_TRIALS = flags.DEFINE_integer(
    "random_max_trials",
    None,
    "Cap on keras-tuner random-search trials (default: the plan's: 40; 400 with --equal_latency).",
)
SEEDS = flags.DEFINE_integer(
    "seeds",
    None,
    "Run every search and retraining with seeds 0..N-1 and report mean and standard error "
    "(default: the plan's single seed 0).",
)
LAMS = flags.DEFINE_list("lams", None, "DenseNAS latency weights (default: 0.05,0.15,0.6).")
MBV2_WIDTHS = flags.DEFINE_list(
    "mbv2_widths", None, "MobileNetV2-style width multipliers (default: 0.5,0.75,1.0)."
)
REPORT_ONLY = flags.DEFINE_bool(
    "report_only",
    False,
    "With --equal_latency: report the seeds finished so far from the run's records, "
    "running nothing (a partial table while the run goes on elsewhere).",
)
HELD_MIN_FRACTIONS = flags.DEFINE_list(
    "held_min_fractions",
    None,
    "With --equal_latency: re-derive the run's DenseNAS searches found here (their "
    "checkpoints, or an earlier budget_held.json's nets) under their budgets at each of "
    "these min_fractions, time them with MobileNetV2 and write budget_held.md; runs "
    "nothing else.",
)
RESULTS_DIR = flags.DEFINE_string(
    "out_dir", None, "Also copy compare.md, compare.png and results.json here."
)


cli.deprecated_alias("results_dir", RESULTS_DIR)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for flag in (REPORT_ONLY, HELD_MIN_FRACTIONS):
        if flag.value and not EQUAL_LATENCY.value:
            raise app.UsageError(f"--{flag.name} goes with --equal_latency")
    if EQUAL_LATENCY.value:
        if LAMS.value is not None:
            raise app.UsageError("--lams has no say at equal latency (the budgets set the aim)")
        plan = equal_latency.REDUCED if REDUCED.value else equal_latency.EqualLatencyPlan()
        run, show = equal_latency.run_equal_latency, equal_latency.format_equal_latency
        files = ("equal_latency.md", "equal_latency.png", "results.json")
    else:
        plan = compare.REDUCED if REDUCED.value else compare.ComparePlan()
        run, show = compare.run_compare, compare.format_results
        files = ("compare.md", "compare.png", "results.json")
    changes = {}
    if TRAIN_EPOCHS.value is not None:
        if TRAIN_EPOCHS.value < 1:
            raise app.UsageError(f"--train_epochs must be at least 1, got {TRAIN_EPOCHS.value}")
        changes["train_epochs"] = TRAIN_EPOCHS.value
    if RANDOM_MAX_TRIALS.value is not None:
        if RANDOM_MAX_TRIALS.value < 1:
            raise app.UsageError(
                f"--random_max_trials must be at least 1, got {RANDOM_MAX_TRIALS.value}"
            )
        changes["random_max_trials"] = RANDOM_MAX_TRIALS.value
    if SEEDS.value is not None:
        if SEEDS.value < 1:
            raise app.UsageError(f"--seeds must be at least 1, got {SEEDS.value}")
        changes["seeds"] = tuple(range(SEEDS.value))
    widths_key = "widths" if EQUAL_LATENCY.value else "mbv2_widths"
    for flag, key in ((LAMS, "lams"), (MBV2_WIDTHS, widths_key)):
        if flag.value is not None:
            try:
                values = tuple(float(v) for v in flag.value)
            except ValueError:
                raise app.UsageError(f"--{flag.name} must be numbers, got {flag.value}") from None
            if not values or min(values) < 0:
                raise app.UsageError(
                    f"--{flag.name} must be non-negative numbers, got {flag.value}"
                )
            changes[key] = values
    plan = dataclasses.replace(plan, **changes)
    if HELD_MIN_FRACTIONS.value:
        try:
            fractions = tuple(float(f) for f in HELD_MIN_FRACTIONS.value)
        except ValueError:
            fractions = ()
        if not fractions or not all(0 <= f <= 1 for f in fractions):
            raise app.UsageError(
                f"--held_min_fractions must be numbers in [0, 1], got {HELD_MIN_FRACTIONS.value}"
            )
        try:
            held = equal_latency.rederived_budget_held(
                RUN_DIR.value, plan, fractions, plan.latency_rounds, plan.budget_runs
            )
        except ValueError as e:
            raise app.UsageError(str(e)) from None
        print(equal_latency.format_rederived_budget_held(held))
        return 0
    if REPORT_ONLY.value:
        try:
            results = equal_latency.report_from_records(RUN_DIR.value, plan)
        except ValueError as e:
            raise app.UsageError(str(e)) from None
    else:
        results = run(RUN_DIR.value, plan)
    print(show(results))
    if RESULTS_DIR.value:
        out = Path(RESULTS_DIR.value)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(Path(RUN_DIR.value) / name, out / name)
        print(f"results copied to {out}", file=sys.stderr)
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
