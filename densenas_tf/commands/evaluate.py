"""Evaluates an exported model on a dataset: accuracy, per-class accuracy,
a confusion matrix and, for a .tflite file, its latency.

  densenas-evaluate --model=exports/fashion/ [--version=N] [--out_dir=runs/eval]
  densenas-evaluate --model=model.tflite --image_folder=DIR [--limit=1000] [--latency_runs=50]

(In a checkout: python tools/evaluate.py with the same flags.)

--model is a SavedModel directory, a TensorFlow Serving model base path
(export_saved_model's --out_dir: its newest version, or --version) or a
.tflite file (float32, float16 or int8). The data are the test split of the
source the data flags name, as training held it out (default: Fashion-MNIST's
test set); --limit keeps its first N images. Prints top-1 and top-5
accuracy and the accuracy per class; with --out_dir writes report.json and
confusion_matrix.png there (each atomically). A .tflite file is also timed:
one thread, batch 1, the median of --latency_runs invocations (0: not timed).
A SavedModel is not timed: latency is measured on its .tflite export.
"""

import sys
from pathlib import Path

from absl import app, flags

from densenas_tf import cli
from densenas_tf.core.runtime import Progress
from densenas_tf.data.sources import open_data
from densenas_tf.evaluation.evaluate import (
    eval_batches,
    eval_count,
    evaluate,
    format_report,
    open_model,
    tflite_latency,
    write_report,
)

MODEL = flags.DEFINE_string(
    "model",
    None,
    "A SavedModel directory, a model base path (BASE/<version>/) or a .tflite file.",
    required=True,
)
VERSION = flags.DEFINE_integer(
    "version", None, "The version of a model base path (default: the newest).", lower_bound=1
)
OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Write report.json and confusion_matrix.png in this directory."
)
LIMIT = flags.DEFINE_integer(
    "limit", None, "Evaluate the first N test images only (default: all).", lower_bound=1
)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Images per model call.", lower_bound=1)
LATENCY_RUNS = flags.DEFINE_integer(
    "latency_runs", 50, "Timed invocations of a .tflite file (0: no timing).", lower_bound=0
)
LATENCY_WARMUP = flags.DEFINE_integer(
    "latency_warmup", 5, "Untimed invocations before timing.", lower_bound=0
)
# The data flags that choose the test images (no training images are read).
DATA_FLAGS = (
    "dataset",
    "data_dir",
    "tfds_name",
    "tfds_data_dir",
    "image_folder",
    "tfrecord_dir",
    "image_size",
    "class_list",
    "test_fraction",
    "data_seed",
    "data_cache_dir",
)
cli.define_data_flags(DATA_FLAGS)


def open_test_data(source: dict):
    """The source's data, the test split streamed where the source streams at all
    (so no training images are held in memory)."""
    streamed = any(source.get(k) for k in ("tfds_name", "image_folder", "tfrecord_dir"))
    return open_data(source, stream=True if streamed else None)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    model = open_model(MODEL.value, VERSION.value)
    source = {
        name: flags.FLAGS[name].value
        for name in DATA_FLAGS
        if flags.FLAGS[name].value is not None or name not in cli.STREAMING_FLAGS
    }
    data = open_test_data(source)
    count = eval_count(data) if LIMIT.value is None else min(LIMIT.value, eval_count(data))
    progress = Progress("evaluating", max(-(-count // BATCH_SIZE.value), 1))
    accuracy = evaluate(
        model,
        eval_batches(data, BATCH_SIZE.value, LIMIT.value),
        data.class_names,
        lambda done: progress.update({"images": done}),
    )
    if model.class_names and tuple(model.class_names) != tuple(data.class_names):
        print(
            f"warning: the model's class names ({', '.join(model.class_names[:4])}, ...) differ "
            f"from the data's ({', '.join(data.class_names[:4])}, ...); accuracy counts by "
            "class index",
            file=sys.stderr,
        )
    if model.kind == "tflite" and LATENCY_RUNS.value:
        first = next(eval_batches(data, 1, 1))[0][0]
        latency = tflite_latency(model.content, first, LATENCY_RUNS.value, LATENCY_WARMUP.value)
    elif model.kind == "tflite":
        latency = {"note": "not timed (--latency_runs=0)"}
    else:
        latency = {
            "note": "measured on .tflite files only: export one with export_tflite and evaluate it"
        }
    report = {
        "model": {
            "path": str(model.path),
            "kind": model.kind,
            "class_names": list(model.class_names) if model.class_names else None,
            **model.description,
        },
        "data": {"name": data.name, "source": source, "limit": LIMIT.value},
        "accuracy": accuracy,
        "latency": latency,
    }
    print(format_report(report))
    if OUT_DIR.value:
        paths = write_report(Path(OUT_DIR.value), report)
        print(f"wrote {paths['report']} and {paths['confusion_matrix']}")
    return 0


def run():
    cli.run(__name__, main, interrupted="nothing was written; re-run the same command")


if __name__ == "__main__":
    run()
