"""Images per second of the streamed training pipeline against the search step's.

  python tools/bench_input.py [--images=512 --image_size=224 --batch_size=64]
      [--step_space=imagenet_mbv2 --step_batch=8 | --step_json=docs/bench_step.json
       --step_preset=imagenet_mbv2:8 | --skip_step] [--work_dir=DIR]

Writes Fashion-MNIST test images upscaled to --image_size as JPEGs (and the same
as TFRecord shards) into --work_dir (default: a temporary directory, removed
afterwards), times decode + random-resized-crop + flip + batch over them, and
prints a table beside the search's weight and architecture steps.
"""

import sys
import tempfile

from absl import app, flags

import densenas_tf.commands  # noqa: F401 (first: the binary's environment, before TensorFlow)
from densenas_tf import cli

IMAGES = flags.DEFINE_integer("images", 512, "JPEGs written and read per epoch.", 1)
IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Side of the JPEGs and the crops.", 8)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Pipeline batch size.", 1)
EPOCHS = flags.DEFINE_integer("epochs", 2, "Timed epochs (after one untimed).", 1)
STEP_SPACE = flags.DEFINE_string("step_space", "imagenet_mbv2", "Space of the search step.")
STEP_BATCH = flags.DEFINE_integer("step_batch", 8, "Batch of the search step.", 1)
STEP_RUNS = flags.DEFINE_integer("step_runs", 5, "Timed search steps.", 1)
STEP_JSON = flags.DEFINE_string(
    "step_json", None, "Read the step's figures from tools/bench_step.py's JSON instead."
)
STEP_PRESET = flags.DEFINE_string("step_preset", "imagenet_mbv2:8", "The preset of --step_json.")
SKIP_STEP = flags.DEFINE_bool("skip_step", False, "Do not time the search step.")
WORK_DIR = flags.DEFINE_string("work_dir", None, "Keep the images here (default: temporary).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from densenas_tf.experiments.bench_input import bench_input, format_table

    def log(line):
        print(line, file=sys.stderr, flush=True)

    figures = None
    if STEP_JSON.value and not SKIP_STEP.value:
        import json

        with open(STEP_JSON.value) as f:
            presets = json.load(f)["presets"]
        if STEP_PRESET.value not in presets:
            raise app.UsageError(
                f"{STEP_JSON.value} has no preset {STEP_PRESET.value}: {list(presets)}"
            )
        figures = presets[STEP_PRESET.value]

    with tempfile.TemporaryDirectory() as temporary:
        rows = bench_input(
            WORK_DIR.value or temporary,
            images=IMAGES.value,
            image_size=IMAGE_SIZE.value,
            batch_size=BATCH_SIZE.value,
            epochs=EPOCHS.value,
            step_space=None if SKIP_STEP.value else STEP_SPACE.value,
            step_batch=STEP_BATCH.value,
            step_runs=STEP_RUNS.value,
            log=log,
            step_figures=figures,
            step_source=STEP_JSON.value or "",
        )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    app.run(cli.main(main, interrupted="nothing was kept; re-run the same command"))
