"""Retrains a derived architecture from scratch and saves it for export.

  python tools/train.py --arch=runs/search/arch.json --run_dir=runs/train [--epochs=10]
      [--overwrite] [--config=imagenet] [--strategy=default|mirrored|multi_worker]
      [--dataset=fashion_mnist | --tfds_name=NAME --tfds_data_dir=DIR | --image_folder=DIR
       | --tfrecord_dir=DIR] [--class_list=FILE] [--image_size=224] [--stream=true|false]

--config reads a training recipe (configs/train/NAME.yaml or a file: TrainConfig
values and a data source); flags given on the command line override it.
Fashion-MNIST is held in memory; TFRecords stream from disk, and so do tfds
datasets and image folders too large for memory (or with --stream=true).

Writes model.keras (pixels 0-255 -> logits, normalisation included) and
metrics.json (test accuracy, history, cost) to the run directory; re-running
the same command resumes after the last finished epoch. One process at a time
uses a run directory; one holding another architecture, config or data is
refused unless --overwrite is given (or it finished no epoch and wrote no
model). --overwrite deletes only the files a training run writes: a run
directory holding anything else, or a search's, is refused and left as it is.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from densenas_tf import cli

CONFIG = flags.DEFINE_string(
    "config", None, "Training recipe: a preset of configs/train/ or a YAML/JSON file."
)
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
    "Delete the training run in --run_dir when it has another architecture, config or data "
    "(one that finished no epoch and wrote no model is replaced without it); only the files "
    "a training run writes are deleted, and a directory holding others is refused.",
)
STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy."
)
cli.define_data_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from densenas_tf.core.runtime import make_strategy
    from densenas_tf.space.arch_spec import load_arch
    from densenas_tf.train.trainer import TrainConfig, train

    spec = load_arch(ARCH.value)
    flag_values = {
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "lr_min": LR_MIN,
        "momentum": MOMENTUM,
        "weight_decay": WEIGHT_DECAY,
        "label_smoothing": LABEL_SMOOTHING,
        "dropout": DROPOUT,
        "augment": AUGMENT,
        "seed": SEED,
    }
    values = {name: flag.value for name, flag in flag_values.items()}
    source = cli.data_source_from_flags()
    if CONFIG.value:
        from densenas_tf.train.recipe import load_train_recipe

        recipe_train, recipe_data = load_train_recipe(CONFIG.value)
        values.update({k: v for k, v in recipe_train.items() if not flag_values[k].present})
        sources = ("tfds_name", "image_folder", "tfrecord_dir")
        if any(flags.FLAGS[k].present for k in sources):  # a source flag replaces the recipe's
            recipe_data = {k: v for k, v in recipe_data.items() if k not in sources}
        source.update({k: v for k, v in recipe_data.items() if not flags.FLAGS[k].present})
    config = TrainConfig(**values)
    # Before the data: MultiWorkerMirroredStrategy must exist before other TensorFlow ops.
    strategy = make_strategy(STRATEGY.value)
    data = cli.open_data(source)
    metrics = train(
        spec,
        data,
        RUN_DIR.value,
        config,
        strategy,
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
