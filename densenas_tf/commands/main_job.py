"""The main job: search -> derive -> retrain -> export -> measure, on Fashion-MNIST.

  densenas-main-job --run_dir=runs/main [--config=fashion_mnist_quick] [--override=KEY=VALUE ...]

(In a checkout: python tools/main_job.py, or bash tools/main_job.sh on a fresh machine.)

Runs the quick search config (configs/search/fashion_mnist_quick.yaml) aimed
at a latency budget (--target_ms; default: MobileNetV2 x0.75's latency measured
here at the start), retrains the derived net, exports a SavedModel and float and int8 TFLite
files (each checked), measures their latency and accuracy, and prints one
table. Re-running the command resumes: finished stages are skipped.
"""

from absl import app, flags

from densenas_tf import cli
from densenas_tf.main_job import format_report, run_main_job

RUN_DIR = flags.DEFINE_string("run_dir", "runs/main", "Run directory.")
CONFIG = flags.DEFINE_string(
    "config", "fashion_mnist_quick", "Search config preset (configs/search/) or YAML/JSON file."
)
OVERRIDE = flags.DEFINE_multi_string("override", [], "Search config overrides, key=value.")
SEED = flags.DEFINE_integer(
    "seed", None, "Seed of the search (default: the config's; same as --override=seed=N)."
)
TRAIN_EPOCHS = flags.DEFINE_integer("train_epochs", 2, "Retraining epochs.")
TRAIN_LIMIT = flags.DEFINE_integer("train_limit", None, "Retrain on N training images only.")
TEST_LIMIT = flags.DEFINE_integer("test_limit", None, "Test on N test images only.")
LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 200, "Timed TFLite runs per model.")
LATENCY_TABLE = flags.DEFINE_string(
    "latency_table",
    None,
    "Search against this latency table (default: the space's shipped table when it passes "
    "its check on this machine, else one measured here first, cached in the run directory).",
)
INT8_LATENCY_TABLE = flags.DEFINE_string(
    "int8_latency_table",
    None,
    "int8 latency table that predicts the int8 net's latency in the report (default: the "
    "shipped one of the space, when there is one).",
)
TARGET_MS = flags.DEFINE_float(
    "target_ms",
    None,
    "Latency budget in ms: the derived net's predicted latency is at most this (default: "
    "the latency of MobileNetV2 x0.75 measured on this machine at the job's start).",
)
cli.deprecated_alias("search_config", CONFIG)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.refuse_override_conflicts(
        {
            "seed": "seed",
            "latency_table": "latency_table",
            "target_ms": ("objective.target_ms", "objective.kind"),
        },
        OVERRIDE.value,
    )
    overrides = ([f"seed={SEED.value}"] if SEED.value is not None else []) + list(OVERRIDE.value)
    report = run_main_job(
        RUN_DIR.value,
        CONFIG.value,
        tuple(overrides),
        train_epochs=TRAIN_EPOCHS.value,
        train_limit=TRAIN_LIMIT.value,
        test_limit=TEST_LIMIT.value,
        latency_runs=LATENCY_RUNS.value,
        latency_table=LATENCY_TABLE.value,
        target_ms=TARGET_MS.value,
        int8_latency_table=INT8_LATENCY_TABLE.value,
    )
    print(format_report(report))
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
