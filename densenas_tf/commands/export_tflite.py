"""Exports a trained model to TFLite (builtin ops only), and checks it.

  densenas-export-tflite --model=runs/train/model.keras \
      --quantization=none|fp16|int8 --out=runs/export/model_int8.tflite

(In a checkout: python export/export_tflite.py with the same flags.)

``none``: float32; ``fp16``: float16 weights; ``int8``: full-integer,
calibrated on --calibration_images training images (refused when the data
has fewer), uint8 pixels in and int8 logits out. The file is run with the
LiteRT interpreter on real test images and compared with the Keras model
(float: max |logits difference|; int8: top-1 agreement and the accuracy
change) and moved into place only when the check passes (exit 2 otherwise).
``--out`` is a file path: a new file or an earlier .tflite (which is
replaced); a directory or any other file is refused and left alone.
"""

from absl import app, flags

from densenas_tf import cli
from densenas_tf.exporting.export import QUANTIZATIONS, check_out_path, export_tflite

MODEL = flags.DEFINE_string("model", None, "model.keras from densenas-train.", required=True)
OUT = flags.DEFINE_string("out", None, "Output .tflite file.", required=True)
QUANTIZATION = flags.DEFINE_enum("quantization", "none", list(QUANTIZATIONS), "Quantization.")
CHECK_IMAGES = flags.DEFINE_integer(
    "check_images", 1000, "Test images used by the check.", lower_bound=1
)
CALIBRATION_IMAGES = flags.DEFINE_integer(
    "calibration_images",
    200,
    "Training images used to calibrate int8 (the data must have as many).",
    lower_bound=1,
)
cli.define_data_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    check_out_path(OUT.value, "tflite")  # before the model and data are loaded
    int8 = QUANTIZATION.value == "int8"
    return cli.run_export(
        MODEL.value,
        lambda model, data: export_tflite(
            model,
            OUT.value,
            QUANTIZATION.value,
            data.test_images[: CHECK_IMAGES.value],
            data.test_labels[: CHECK_IMAGES.value],
            calibration_images=data.train_images[: CALIBRATION_IMAGES.value] if int8 else None,
            calibration_requested=CALIBRATION_IMAGES.value if int8 else None,
        ),
    )


def run() -> None:
    cli.run(__name__, main, interrupted="nothing was written; re-run the same command")


if __name__ == "__main__":
    run()
