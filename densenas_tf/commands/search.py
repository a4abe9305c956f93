r"""DenseNAS search: config -> run directory (resumable).

  densenas-search --config=fashion_mnist --run_dir=runs/search \
      [--target_ms=0.25] [--strategy=default|mirrored|multi_worker] [--override=epochs=4 ...]
      [--seed=N] [--latency_table=FILE] [--mixed_precision]
      [--tfds_name=NAME --tfds_data_dir=DIR | --image_folder=DIR | --tfrecord_dir=DIR]
      [--class_list=FILE] [--image_size=224] [--train_limit=N] [--data_cache_dir=DIR]

(In a checkout: python tools/search.py with the same flags.)

The data flags set the config's data.* keys (the same as --override=data.KEY=...);
--seed, --latency_table, --target_ms and --mixed_precision set config keys too,
and a flag given with an --override of its key is refused.
Fashion-MNIST is held in memory; a tfds dataset, an image folder or TFRecords
stream from disk, their weight/architecture split drawn per class by seed.

Re-running the same command on the same run directory resumes it; a finished
run says so and exits. A run directory holding another config is refused
unless --overwrite is given; one that another process is using is refused.
--overwrite deletes only the files a search writes: a directory holding
anything else (a folder that is no run, a training run's) is refused as it is.
"""

import json

import tensorflow as tf
from absl import app, flags

from densenas_tf import cli
from densenas_tf.search.config import load_search_config
from densenas_tf.search.run import format_summary, run_search

CONFIG = flags.DEFINE_string(
    "config", "fashion_mnist", "Search config preset (configs/search/) or YAML/JSON file."
)
RUN_DIR = flags.DEFINE_string("run_dir", None, "Run directory.", required=True)
STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy."
)
OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "Config overrides, key=value (e.g. objective.lam=0.3)."
)
OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Delete the search in --run_dir when it has another config; only the files a search "
    "writes are deleted, and a directory holding others is refused.",
)
ACCEPT_TABLE_CHANGE = flags.DEFINE_bool(
    "accept_table_change",
    False,
    "Resume a search whose latency table changed since it began, against the new table; "
    "the old one is kept in --run_dir and the change recorded with its epoch.",
)
MIXED_PRECISION = flags.DEFINE_bool(
    "mixed_precision",
    None,
    "float16 compute with float32 architecture parameters and latency (for GPUs); "
    "same as --override=mixed_precision=true.",
)
TARGET_MS = flags.DEFINE_float(
    "target_ms",
    None,
    "Latency budget in ms: the derived net's predicted latency is at most this, and the "
    "search steers towards it (same as --override=objective.kind=budget "
    "--override=objective.target_ms=T).",
)
SEED = flags.DEFINE_integer(
    "seed", None, "Seed of the search (default: the config's; same as --override=seed=N)."
)
LATENCY_TABLE = flags.DEFINE_string(
    "latency_table",
    None,
    "Latency table file (default: the config's, else the space's shipped table; same as "
    "--override=latency_table=FILE).",
)
# The data flags that apply to a search: it trains on the training images,
# divided by data.arch_fraction and the config's seed (no test split, no data seed).
cli.define_data_flags(["data_dir", *cli.SEARCH_DATA_KEYS])
LOGICAL_CPUS = flags.DEFINE_integer(
    "logical_cpus",
    0,
    "Split the CPU into this many logical devices (to run replicas on one CPU).",
    lower_bound=0,
)

# The flags that set a config key, beside the data flags.
FLAG_KEYS = {
    "target_ms": ("objective.target_ms", "objective.kind"),
    "mixed_precision": "mixed_precision",
    "seed": "seed",
    "latency_table": "latency_table",
}


def config_overrides() -> list[str]:
    """The config overrides of the command line: the flags' first, then --override's."""
    cli.refuse_override_conflicts(FLAG_KEYS, OVERRIDE.value)
    overrides = cli.search_data_overrides(OVERRIDE.value)
    if TARGET_MS.value is not None:
        overrides += ["objective.kind=budget", f"objective.target_ms={TARGET_MS.value!r}"]
    if MIXED_PRECISION.value is not None:
        overrides.append(f"mixed_precision={str(MIXED_PRECISION.value).lower()}")
    if SEED.value is not None:
        overrides.append(f"seed={SEED.value}")
    if LATENCY_TABLE.value is not None:
        overrides.append(f"latency_table={json.dumps(LATENCY_TABLE.value)}")
    return overrides + list(OVERRIDE.value)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if LOGICAL_CPUS.value:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS.value
        )
    config = load_search_config(CONFIG.value, config_overrides())
    summary = run_search(
        config,
        RUN_DIR.value,
        STRATEGY.value,
        OVERWRITE.value,
        accept_table_change=ACCEPT_TABLE_CHANGE.value,
    ).summary
    print(format_summary(summary, RUN_DIR.value))
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
