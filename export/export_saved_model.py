"""Exports a trained model as a SavedModel for serving, and checks it.

  python export/export_saved_model.py --model=runs/train/model.keras --out=export/out/saved_model

Signatures: ``serving_default`` takes ``image`` as uint8 pixels [batch, H, W, C];
``serving_float`` takes float32 pixels in 0-255; both return ``logits`` and
``probabilities``. The export is reloaded and compared with the Keras model on
real test images (the training run's data unless data flags are given); it
is moved into place only when the check passes (exit 2 otherwise). ``--out``
must be a new or empty directory, or an earlier export of this tool (which
is replaced); anything else is refused and left alone.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from densenas_tf import cli

MODEL = flags.DEFINE_string("model", None, "model.keras from tools/train.py.", required=True)
OUT = flags.DEFINE_string("out", None, "Output SavedModel directory.", required=True)
CHECK_IMAGES = flags.DEFINE_integer(
    "check_images", 500, "Test images used by the check.", lower_bound=1
)
TOLERANCE = flags.DEFINE_float(
    "tolerance", 1e-4, "Largest allowed |logits - Keras|.", lower_bound=0.0
)
cli.define_data_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from densenas_tf.exporting.export import check_out_path, export_saved_model

    check_out_path(OUT.value, "saved_model")  # before the model and data are loaded
    return cli.run_export(
        MODEL.value,
        lambda model, data: export_saved_model(
            model, OUT.value, data.test_images[: CHECK_IMAGES.value], tolerance=TOLERANCE.value
        ),
    )


if __name__ == "__main__":
    app.run(cli.main(main))
