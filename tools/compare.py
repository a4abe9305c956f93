"""The paper's Fig. 5 experiment on Fashion-MNIST: DenseNAS against a fixed-block
search, MobileNetV2-style nets and keras-tuner random search, at equal latency.

  python tools/compare.py --run_dir=runs/compare [--reduced] [--train_epochs=N]
      [--seeds=3 --lams=0.15 --mbv2_widths=0.5,0.75] [--results_dir=docs/results]

Every net is retrained with the same recipe and seed, tested, and timed as
float TFLite (1 thread, batch 1). Each stage is cached in the run directory, so
re-running resumes. --reduced runs the whole pipeline in minutes (tiny
schedules; its numbers say nothing about the methods).
"""

import dataclasses
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from densenas_tf import cli

RUN_DIR = flags.DEFINE_string("run_dir", "runs/compare", "Run directory.")
REDUCED = flags.DEFINE_bool("reduced", False, "Tiny schedules, for a check of the pipeline.")
TRAIN_EPOCHS = flags.DEFINE_integer(
    "train_epochs", None, "Retraining epochs per net (default: the plan's, 3; 1 with --reduced)."
)
RANDOM_MAX_TRIALS = flags.DEFINE_integer(
    "random_max_trials", None, "Cap on keras-tuner random-search trials (default: the plan's, 40)."
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
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Also copy compare.md, compare.png and results.json here."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from densenas_tf.experiments.compare import REDUCED as REDUCED_PLAN
    from densenas_tf.experiments.compare import ComparePlan, format_results, run_compare

    plan = REDUCED_PLAN if REDUCED.value else ComparePlan()
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
    for flag, key in ((LAMS, "lams"), (MBV2_WIDTHS, "mbv2_widths")):
        if flag.value is not None:
            try:
                values = tuple(float(v) for v in flag.value)
            except ValueError:
                raise app.UsageError(f"--{key} must be numbers, got {flag.value}") from None
            if not values or min(values) < 0:
                raise app.UsageError(f"--{key} must be non-negative numbers, got {flag.value}")
            changes[key] = values
    plan = dataclasses.replace(plan, **changes)
    results = run_compare(RUN_DIR.value, plan)
    print(format_results(results))
    if RESULTS_DIR.value:
        out = Path(RESULTS_DIR.value)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("compare.md", "compare.png", "results.json"):
            shutil.copyfile(Path(RUN_DIR.value) / name, out / name)
        print(f"results copied to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(cli.main(main))
