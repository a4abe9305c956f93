"""An exported model on a dataset: top-1 and top-5 accuracy, accuracy per
class, the confusion matrix (with a picture) and, for a .tflite file, its
latency.

``open_model`` reads what the exporters write: a SavedModel directory, a
TensorFlow Serving model base path (``BASE/<version>/``: the newest version,
or the one asked for) or a .tflite file (float32, float16 or int8; the input
is quantised as the interpreter's input details say). The model is run on
uint8 pixels (0-255), as the exports take them. ``eval_batches`` gives the
test split of any data source the other binaries read (the part training held
out, for sources without a test split), its first ``limit`` images in reading
order. ``evaluate`` counts; ``tflite_latency`` times one image through the
LiteRT interpreter (one thread, batch 1, the median of ``runs`` timed
invocations after ``warmup`` untimed ones). A SavedModel's latency is not
timed: latency is what the net takes on the device, measured on its .tflite
export. ``write_report`` writes the JSON report and the confusion-matrix PNG,
each atomically.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import write_bytes_atomic, write_text_atomic
from densenas_tf.data.stream import named_data_errors
from densenas_tf.exporting.export import SIGNATURES, TFLiteRunner
from densenas_tf.latency.measure import timed_runs

# TFLite latency: untimed and timed invocations of one image.
LATENCY_WARMUP = 5
LATENCY_RUNS = 50
REPORT_FILE = "report.json"
CONFUSION_FILE = "confusion_matrix.png"
_VERSION = re.compile(r"[0-9]+")
_TFLITE_IDENTIFIER = b"TFL3"  # bytes 4-8 of a TFLite flatbuffer


class EvaluationError(DenseNASError, ValueError):
    """A model or data that cannot be evaluated; the message says what and how to fix it."""


@dataclasses.dataclass
class ExportedModel:
    """An exported classifier: uint8 pixels [N, H, W, C] -> float32 logits [N, classes]."""

    kind: str  # "saved_model" or "tflite"
    path: Path  # the SavedModel directory (the version's) or the .tflite file
    predict: Callable[[np.ndarray], np.ndarray]
    input_shape: tuple[int, int, int] | None  # None: not recorded (a SavedModel checks it)
    num_classes: int | None
    class_names: tuple[str, ...] | None = None
    description: dict[str, Any] = dataclasses.field(default_factory=dict)
    content: bytes | None = None  # a .tflite file's bytes


# ----- models ------------------------------------------------------------------------------
def find_saved_model(path: str | os.PathLike, version: int | None = None) -> Path:
    """The SavedModel directory of ``path``: itself when it holds saved_model.pb,
    else its newest numbered version (TensorFlow Serving's layout) or ``version``."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        if version is not None:
            raise EvaluationError(
                f"{path} is a SavedModel itself, with no versions; drop --version"
            )
        return path
    versions = sorted(
        int(p.name)
        for p in path.iterdir()
        if _VERSION.fullmatch(p.name) and (p / "saved_model.pb").is_file()
    )
    if not versions:
        raise EvaluationError(
            f"{path} holds no SavedModel (no saved_model.pb) and no version directories "
            "(<base>/1/saved_model.pb); pass a SavedModel, a model base path or a .tflite file"
        )
    if version is None:
        return path / str(versions[-1])
    if version not in versions:
        raise EvaluationError(
            f"{path} has no version {version}; its versions are {versions}: pass one of them "
            "as --version, or none for the newest"
        )
    return path / str(version)


def open_model(path: str | os.PathLike, version: int | None = None) -> ExportedModel:
    """A SavedModel directory, a model base path or a .tflite file, ready to run (module doc)."""
    path = Path(path)
    if not path.exists():
        raise EvaluationError(
            f"{path} does not exist; pass a SavedModel directory, a model base path "
            "(export_saved_model's --out_dir) or a .tflite file (export_tflite's --out)"
        )
    if path.is_dir():
        return _open_saved_model(find_saved_model(path, version))
    if version is not None:
        raise EvaluationError(f"{path} is a file; --version applies to a model base path only")
    content = path.read_bytes()
    if path.suffix != ".tflite" or content[4:8] != _TFLITE_IDENTIFIER:
        raise EvaluationError(
            f"{path} is no .tflite file (no TFLite identifier); pass a .tflite file written by "
            "export_tflite, a SavedModel directory or a model base path"
        )
    return _open_tflite(path, content)


def _open_tflite(path: Path, content: bytes) -> ExportedModel:
    try:
        runner = TFLiteRunner(content, num_threads=1)
    except (ValueError, RuntimeError) as err:
        raise EvaluationError(f"{path}: the interpreter cannot load it ({err})") from None
    shape = tuple(int(d) for d in runner.input["shape"][1:])
    classes = int(runner.output["shape"][-1])
    if len(shape) != 3:
        raise EvaluationError(
            f"{path} takes inputs of shape {list(runner.input['shape'])}, not images "
            "[batch, height, width, channels]"
        )
    scale, zero = runner.input["quantization"]
    description = {
        "input_dtype": np.dtype(runner.input["dtype"]).name,
        "input_quantization": {"scale": float(scale), "zero_point": int(zero)},
        "output_dtype": np.dtype(runner.output["dtype"]).name,
        "bytes": len(content),
    }
    return ExportedModel(
        "tflite",
        path,
        lambda images: runner(images.astype(np.float32)),
        shape,
        classes,
        description=description,
        content=content,
    )


def _open_saved_model(path: Path) -> ExportedModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as err:
        message = getattr(err, "message", None) or str(err)
        reason = " ".join(message.split())[:300]
        raise EvaluationError(f"{path}: cannot load the SavedModel ({reason})") from None
    if SIGNATURES[0] not in loaded.signatures:
        raise EvaluationError(
            f"{path} has no {SIGNATURES[0]!r} signature (it has {sorted(loaded.signatures)}); "
            "pass a SavedModel written by export_saved_model"
        )
    signature = loaded.signatures[SIGNATURES[0]]
    outputs = set(signature.structured_outputs)
    if "logits" not in outputs:
        raise EvaluationError(
            f"{path}: its {SIGNATURES[0]!r} signature returns {sorted(outputs)}, no 'logits'; "
            "pass a SavedModel written by export_saved_model"
        )
    (input_name,) = signature.structured_input_signature[1]

    def predict(images: np.ndarray) -> np.ndarray:
        try:
            result = signature(**{input_name: tf.constant(images, tf.uint8)})
        except tf.errors.InvalidArgumentError as err:
            raise EvaluationError(
                f"{path} refuses the images: {' '.join(err.message.split())[:300]}"
            ) from None
        predict.class_names = result.get("class_names")
        return result["logits"].numpy().astype(np.float32)

    predict.class_names = None
    model = ExportedModel("saved_model", path, predict, None, None)
    marker = path / "densenas_export.json"
    if marker.is_file():
        try:
            model.description["export"] = json.loads(marker.read_text())
        except ValueError:
            pass
    return model


# ----- data --------------------------------------------------------------------------------
def eval_batches(
    data, batch_size: int = 100, limit: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 images, int32 labels) batches of the test split of a data.ImageData or
    a streamed pipelines.StreamingData, its first ``limit`` images in reading order."""
    if hasattr(data, "test_images"):
        count = len(data.test_labels) if limit is None else min(limit, len(data.test_labels))
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            yield data.test_images[start:stop], data.test_labels[start:stop]
        return
    steps = None if limit is None else -(-limit // batch_size)
    seen = 0
    with named_data_errors():
        for x, y in data.images(data.test, batch_size, drop_remainder=False, steps=steps):
            images = np.clip(np.round(x.numpy()), 0, 255).astype(np.uint8)
            labels = y.numpy().astype(np.int32)
            if limit is not None:
                images, labels = images[: limit - seen], labels[: limit - seen]
            seen += len(labels)
            yield images, labels
            if limit is not None and seen >= limit:
                return


def eval_count(data) -> int:
    return len(data.test_labels) if hasattr(data, "test_labels") else data.num_test


# ----- counting ----------------------------------------------------------------------------
def evaluate(
    model: ExportedModel,
    batches: Iterator[tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    on_batch: Callable[[int], None] = lambda images_done: None,
) -> dict[str, Any]:
    """Top-1 and top-k (k = 5, or the class count when smaller) accuracy, accuracy
    per class and the confusion matrix (rows: true class, columns: predicted)."""
    num_classes = len(class_names)
    if model.num_classes is not None and model.num_classes != num_classes:
        raise EvaluationError(
            f"{model.path} has {model.num_classes} classes but the data have {num_classes}; "
            "evaluate on the data the model was trained on (the same data flags)"
        )
    k = min(5, num_classes)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    top_k_hits, count = 0, 0
    for images, labels in batches:
        if model.input_shape is not None and tuple(images.shape[1:]) != model.input_shape:
            raise EvaluationError(
                f"{model.path} takes {'x'.join(map(str, model.input_shape))} images but the "
                f"data's are {'x'.join(map(str, images.shape[1:]))}; pass --image_size (and the "
                "data the model was trained on)"
            )
        logits = model.predict(images)
        if logits.shape[-1] != num_classes:
            raise EvaluationError(
                f"{model.path} gives {logits.shape[-1]} classes but the data have "
                f"{num_classes}; evaluate on the data the model was trained on"
            )
        predicted = logits.argmax(-1)
        np.add.at(confusion, (labels, predicted), 1)
        # Top-k: the true class's logit is among the k largest (ties broken as argsort does).
        top_k = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
        top_k_hits += int(np.sum(top_k == labels[:, None]))
        count += len(labels)
        on_batch(count)
    if count == 0:
        raise EvaluationError(
            "the data hold no test images; pass a source with a test split, or a "
            "--test_fraction that leaves some"
        )
    names = getattr(model.predict, "class_names", None)
    if names is not None:
        model.class_names = tuple(n.decode() for n in names.numpy()[0])
    per_class = {}
    for i, name in enumerate(class_names):
        total = int(confusion[i].sum())
        per_class[str(name)] = {
            "images": total,
            "correct": int(confusion[i, i]),
            "accuracy": float(confusion[i, i] / total) if total else None,
        }
    return {
        "images": count,
        "top1_accuracy": float(np.trace(confusion) / count),
        "top_k": k,
        "top5_accuracy": float(top_k_hits / count),
        "per_class": per_class,
        "class_names": [str(n) for n in class_names],
        "confusion_matrix": confusion.tolist(),
    }


def tflite_latency(
    content: bytes,
    image: np.ndarray | None = None,
    runs: int = LATENCY_RUNS,
    warmup: int = LATENCY_WARMUP,
) -> dict[str, Any]:
    """Median (and mean, std) ms of one invocation on one image: one thread, batch 1."""
    from ai_edge_litert.interpreter import Interpreter

    if runs < 1 or warmup < 0:
        raise EvaluationError(f"latency runs must be >= 1 and warm-up >= 0, got {runs}, {warmup}")
    interpreter = Interpreter(model_content=content, num_threads=1)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    if image is None:
        image = np.zeros(detail["shape"][1:], np.uint8)
    pixels = image[None].astype(np.float32)
    scale, zero = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        info = np.iinfo(detail["dtype"])
        pixels = np.clip(np.round(pixels / scale + zero), info.min, info.max)
    interpreter.set_tensor(detail["index"], pixels.astype(detail["dtype"]))
    ms = np.asarray(timed_runs(interpreter.invoke, warmup, runs)) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "runs": runs,
        "warmup": warmup,
        "threads": 1,
        "batch_size": 1,
    }


# ----- the report --------------------------------------------------------------------------
def confusion_png(confusion: Sequence[Sequence[int]], class_names: Sequence[str], title: str):
    """The confusion matrix as a PNG picture (bytes): counts, rows the true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    n = len(class_names)
    side = min(max(4.0, 0.55 * n + 2.5), 24.0)
    figure, axes = plt.subplots(figsize=(side + 1.2, side))
    shown = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="images")
    if n <= 40:
        axes.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
        axes.set_yticks(range(n), class_names, fontsize=8)
        limit = matrix.max() or 1
        for (i, j), value in np.ndenumerate(matrix):
            if n <= 20 and value:
                color = "white" if value > limit / 2 else "black"
                axes.text(j, i, str(value), ha="center", va="center", fontsize=7, color=color)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def write_report(out_dir: str | os.PathLike, report: Mapping[str, Any]) -> dict[str, Path]:
    """``report.json`` and ``confusion_matrix.png`` in out_dir, each written atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EvaluationError(f"{out_dir} is a file; --out_dir names a directory")
    accuracy = report["accuracy"]
    where = report["model"]["path"]
    where = where if len(where) <= 50 else "..." + where[-47:]
    title = f"{where}: top-1 {accuracy['top1_accuracy']:.4f} on {accuracy['images']} images"
    png = confusion_png(accuracy["confusion_matrix"], accuracy["class_names"], title)
    paths = {"report": out_dir / REPORT_FILE, "confusion_matrix": out_dir / CONFUSION_FILE}
    write_bytes_atomic(paths["confusion_matrix"], png)
    write_text_atomic(paths["report"], json.dumps(report, indent=2) + "\n")
    return paths


def format_report(report: Mapping[str, Any], most_classes: int = 10) -> str:
    """The printed summary of a report: a few lines."""
    model, accuracy = report["model"], report["accuracy"]
    lines = [
        f"{model['kind']} {model['path']}: {accuracy['images']} test images of "
        f"{report['data']['name']} ({len(accuracy['class_names'])} classes)",
        f"top-1 accuracy {accuracy['top1_accuracy']:.4f}, top-{accuracy['top_k']} accuracy "
        f"{accuracy['top5_accuracy']:.4f}",
    ]
    per_class = [
        f"{name} {entry['accuracy']:.3f} ({entry['images']})"
        for name, entry in accuracy["per_class"].items()
        if entry["accuracy"] is not None
    ]
    shown = per_class[:most_classes]
    more = f" ... ({len(per_class) - most_classes} more)" if len(per_class) > most_classes else ""
    lines.append("per class: " + ", ".join(shown) + more)
    latency = report.get("latency")
    if latency and "median_ms" in latency:
        lines.append(
            f"latency {latency['median_ms']:.3f} ms (median of {latency['runs']} runs, 1 thread, "
            f"batch 1; mean {latency['mean_ms']:.3f}, std {latency['std_ms']:.3f})"
        )
    elif latency:
        lines.append(f"latency: {latency['note']}")
    return "\n".join(lines)
