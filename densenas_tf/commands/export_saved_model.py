"""Exports a trained model for TensorFlow Serving, and checks it.

  densenas-export-saved-model --model=runs/train/model.keras --out_dir=runs/serving/densenas
      [--version=N] [--warmup_requests=5] [--check_images=500] [data flags]

(In a checkout: python export/export_saved_model.py with the same flags.)

Writes TensorFlow Serving's layout: ``--out_dir`` is the model base path
(tensorflow_model_server's --model_base_path) and the export goes to
``OUT_DIR/<version>/``: ``--version``, by default one above the highest
version there (1 in a new directory). A version is written once: an
existing one is refused and never touched, nor is anything else in
OUT_DIR. The version is written in a hidden temporary directory in OUT_DIR
and renamed into place only after its check passed, so TensorFlow Serving
never sees half a version.

Signatures: ``serving_default`` takes ``image`` as uint8 pixels [batch, H, W,
C]; ``serving_float`` takes float32 pixels, finite and in 0-255 (anything
else is refused); both return ``logits`` and ``probabilities`` (float32
[batch, classes]), ``classes`` (string [batch], the top class's name) and
``class_names`` (string [batch, classes]). The class names are the data's
(Fashion-MNIST's ten, an image folder's sub-folders, a tfds dataset's label
names), numbered "0".."N-1" when the data has none. Warm-up requests
(``assets.extra/tf_serving_warmup_requests``, PredictionLog records):
--warmup_requests real test images, each sent to both signatures.

The export is reloaded and compared with the Keras model on real test images
(the training run's data unless data flags are given), its warm-up records
are run through it, and it is moved into place only when the check passes
(exit 2 otherwise). See docs/serving.md.

--out=DIR (deprecated, for one release) writes DIR as the SavedModel itself,
as before (a new or empty directory, or an earlier export of this tool,
which is replaced), not TensorFlow Serving's layout.
"""

import os
import sys

from absl import app, flags

from densenas_tf import cli
from densenas_tf.exporting.export import (
    FLOAT_TOLERANCE,
    MAX_WARMUP_RECORDS,
    SIGNATURES,
    WARMUP_REQUESTS,
    ExportError,
    check_out_path,
    check_version_path,
    export_saved_model,
    export_serving,
)

MODEL = flags.DEFINE_string("model", None, "model.keras from densenas-train.", required=True)
OUT_DIR = flags.DEFINE_string(
    "out_dir",
    None,
    "Model base path (TensorFlow Serving's --model_base_path): the export goes to "
    "OUT_DIR/<version>/.",
)
VERSION = flags.DEFINE_integer(
    "version",
    None,
    "Version to write in --out_dir (default: one above the highest there, 1 in a new "
    "directory); an existing version is refused.",
    lower_bound=1,
)
WARMUP = flags.DEFINE_integer(
    "warmup_requests",
    WARMUP_REQUESTS,
    "Warm-up requests per signature (real test images, one a request) in "
    "assets.extra/tf_serving_warmup_requests; 0: none.",
    lower_bound=0,
    upper_bound=MAX_WARMUP_RECORDS // len(SIGNATURES),
)
CHECK_IMAGES = flags.DEFINE_integer(
    "check_images", 500, "Test images used by the check.", lower_bound=1
)
TOLERANCE = flags.DEFINE_float(
    "tolerance", FLOAT_TOLERANCE["none"], "Largest allowed |logits - Keras|.", lower_bound=0.0
)
# The old spelling: one SavedModel directory. Shown by --helpfull only.
OUT = flags.DEFINE_string(
    "out",
    None,
    "Deprecated: DIR becomes one SavedModel directory (not TensorFlow Serving's layout); "
    "use --out_dir.",
    module_name=cli.DEPRECATED,
)
cli.define_data_flags()


def class_names(model, data, log=lambda line: print(line, file=sys.stderr)):
    """The data's class names when they are as many as the model's classes, else
    None (numbered classes), saying why."""
    classes = int(model.output_shape[-1])
    if len(data.class_names) == classes:
        return data.class_names
    log(
        f"note: the data has {len(data.class_names)} classes but the model {classes}: the "
        f"export names its classes 0..{classes - 1}"
    )
    return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if OUT.value is not None:
        if OUT_DIR.value is not None or VERSION.value is not None:
            raise ExportError(
                "--out (deprecated: one SavedModel directory) cannot go with --out_dir or "
                "--version; give --out_dir (and --version) only"
            )
        print(
            "warning: --out is deprecated; it writes one SavedModel directory, not TensorFlow "
            "Serving's layout: use --out_dir=BASE (the export goes to BASE/<version>/)",
            file=sys.stderr,
        )
        check_out_path(OUT.value, "saved_model")  # before the model and data are loaded
        return cli.run_export(
            MODEL.value,
            lambda model, data: export_saved_model(
                model,
                OUT.value,
                data.test_images[: CHECK_IMAGES.value],
                tolerance=TOLERANCE.value,
                class_names=class_names(model, data),
                warmup=WARMUP.value,
            ),
        )
    if OUT_DIR.value is None:
        raise ExportError(
            "no output: pass --out_dir=BASE, the model base path TensorFlow Serving reads (the "
            "export goes to BASE/<version>/)"
        )
    check_version_path(OUT_DIR.value, VERSION.value)  # before the model and data are loaded
    done = {}

    def export(model, data):
        done.update(
            export_serving(
                model,
                OUT_DIR.value,
                data.test_images[: CHECK_IMAGES.value],
                version=VERSION.value,
                tolerance=TOLERANCE.value,
                class_names=class_names(model, data),
                warmup=WARMUP.value,
            )
        )

    code = cli.run_export(MODEL.value, export)
    base = done["base"]
    print(
        f"version {done['version']} of {base}; serve it with: tensorflow_model_server "
        f"--model_base_path={os.path.abspath(base)} --model_name=densenas --rest_api_port=8501"
    )
    return code


def run() -> None:
    cli.run(__name__, main, interrupted="nothing was written; re-run the same command")


if __name__ == "__main__":
    run()
