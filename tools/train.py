"""Retrains a derived architecture from scratch and saves it for export.

  python tools/train.py --arch=runs/search/arch.json --run_dir=runs/train [--epochs=10]
      [--overwrite]
      [--dataset=fashion_mnist | --tfds_name=NAME --tfds_data_dir=DIR | --image_folder=DIR]

Writes model.keras (pixels 0-255 -> logits, normalisation included) and
metrics.json (test accuracy, history, cost) to the run directory; re-running
the same command resumes after the last finished epoch. One process at a time
uses a run directory; one holding another architecture, config or data is
refused unless --overwrite is given (or it finished no epoch).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from densenas_tf import cli

ARCH = flags.DEFINE_string("arch", None, "ArchSpec JSON file or shipped net name.", required=True)
RUN_DIR = flags.DEFINE_string("run_dir", None, "Run directory.", required=True)
EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Global batch size.")
LR = flags.DEFINE_float("lr", 0.1, "Initial learning rate (cosine per step to --lr_min).")
LR_MIN = flags.DEFINE_float("lr_min", 1e-4, "Final learning rate.")
MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 4e-5, "Weight decay.")
LABEL_SMOOTHING = flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing.")
DROPOUT = flags.DEFINE_float("dropout", 0.0, "Dropout before the classifier.")
AUGMENT = flags.DEFINE_bool("augment", True, "Pad-and-crop (or resized crop) and flips.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and the data order.")
OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Delete a run directory that holds a training run with another architecture, config or "
    "data (one that finished no epoch is replaced without it).",
)
STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy."
)
cli.define_data_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from densenas_tf.arch_spec import load_arch
    from densenas_tf.runtime import make_strategy
    from densenas_tf.train import TrainConfig, train

    spec = load_arch(ARCH.value)
    config = TrainConfig(
        epochs=EPOCHS.value,
        batch_size=BATCH_SIZE.value,
        lr=LR.value,
        lr_min=LR_MIN.value,
        momentum=MOMENTUM.value,
        weight_decay=WEIGHT_DECAY.value,
        label_smoothing=LABEL_SMOOTHING.value,
        dropout=DROPOUT.value,
        augment=AUGMENT.value,
        seed=SEED.value,
    )
    source = cli.data_source_from_flags()
    data = cli.load_data(source)
    metrics = train(
        spec,
        data,
        RUN_DIR.value,
        config,
        make_strategy(STRATEGY.value),
        source,
        overwrite=OVERWRITE.value,
    )
    print(
        f"{metrics['arch']}: test accuracy {metrics['test_accuracy']:.4f} "
        f"({metrics['test_images']} images), {metrics['params']:,} params, "
        f"{metrics['mult_adds'] / 1e6:.1f}M multiply-adds; model {metrics['model']}"
    )
    return 0


if __name__ == "__main__":
    app.run(cli.main(main))
