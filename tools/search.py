"""DenseNAS search: config -> run directory (resumable).

  python tools/search.py --config=fashion_mnist --run_dir=runs/search \
      [--target_ms=0.25] [--strategy=default|mirrored|multi_worker] [--override=epochs=4 ...]
      [--mixed_precision]
      [--tfds_name=NAME --tfds_data_dir=DIR | --image_folder=DIR | --tfrecord_dir=DIR]
      [--class_list=FILE] [--image_size=224] [--train_limit=N] [--data_cache_dir=DIR]

The data flags set the config's data.* keys (the same as --override=data.KEY=...):
Fashion-MNIST is held in memory; a tfds dataset, an image folder or TFRecords
stream from disk, their weight/architecture split drawn per class by seed.

Re-running the same command on the same run directory resumes it; a finished
run says so and exits. A run directory holding another config is refused
unless --overwrite is given; one that another process is using is refused.
--overwrite deletes only the files a search writes: a directory holding
anything else (a folder that is no run, a training run's) is refused as it is.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from densenas_tf import cli

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
cli.define_data_flags()
LOGICAL_CPUS = flags.DEFINE_integer(
    "logical_cpus",
    0,
    "Split the CPU into this many logical devices (to run replicas on one CPU).",
    lower_bound=0,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    import tensorflow as tf

    if LOGICAL_CPUS.value:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS.value
        )
    from densenas_tf.search.config import load_search_config
    from densenas_tf.search.run import format_summary, run_search

    overrides = cli.search_data_overrides() + list(OVERRIDE.value)
    if TARGET_MS.value is not None:
        overrides += ["objective.kind=budget", f"objective.target_ms={TARGET_MS.value!r}"]
    if MIXED_PRECISION.value is not None:
        overrides.append(f"mixed_precision={str(MIXED_PRECISION.value).lower()}")
    config = load_search_config(CONFIG.value, overrides)
    summary = run_search(
        config,
        RUN_DIR.value,
        STRATEGY.value,
        OVERWRITE.value,
        accept_table_change=ACCEPT_TABLE_CHANGE.value,
    ).summary
    print(format_summary(summary, RUN_DIR.value))
    return 0


if __name__ == "__main__":
    app.run(cli.main(main))
