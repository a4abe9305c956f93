"""Exporting a trained model (pixels -> logits) for serving, each export verified.

- SavedModel: signatures ``serving_default`` (``image``: uint8 pixels) and
  ``serving_float`` (``image``: float32 pixels, 0-255), both returning
  ``logits`` and ``probabilities``. Images of the wrong size or channel count
  are refused with an error naming the expected shape.
- TFLite, builtin ops only: ``none`` (float32), ``fp16`` (float16 weights) or
  ``int8`` (full-integer, calibrated on training images; uint8 pixels in,
  int8 logits out, dequantised by ``TFLiteRunner``). ``convert_tflite`` is
  also the converter of the latency tables, so they time what is exported.

Every export is written to a temporary path, reloaded and compared with the
Keras model on real images, and renamed into place only when it passes; a
failed check raises ExportCheckError and leaves nothing at the output path.

An export never deletes what it did not write: the output path must be new,
an empty directory (SavedModel), or an earlier export of ours, which is
replaced. A SavedModel of ours holds ``EXPORT_MARKER``; a .tflite of ours is
recognised by the TFLite file identifier. Anything else is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import replace_atomic

QUANTIZATIONS = ("none", "fp16", "int8")
# Pass criteria of the self-checks (float: logits max abs difference; int8: top-1).
FLOAT_TOLERANCE = {"none": 1e-4, "fp16": 5e-2}
INT8_MIN_AGREEMENT = 0.98
# Written inside every SavedModel this module exports: how a later export
# recognises a directory it may replace.
EXPORT_MARKER = "densenas_export.json"
_MARKER_WRITER = "densenas_tf.exporting.export_saved_model"
_SAVED_MODEL_ENTRIES = frozenset(
    {"saved_model.pb", "fingerprint.pb", "variables", "assets", EXPORT_MARKER}
)
_TFLITE_IDENTIFIER = b"TFL3"  # bytes 4-8 of a TFLite flatbuffer


class ExportError(DenseNASError, ValueError):
    """An export that cannot be made (bad model path, bad option)."""


class ExportCheckError(DenseNASError, RuntimeError):
    """An export that was written but failed its check; nothing was kept."""

    exit_code = 2


def load_trained_model(path: str | os.PathLike):
    import keras

    path = Path(path)
    if not path.is_file() or path.suffix != ".keras":
        raise ExportError(
            f"{path}: not a .keras model file; pass the model.keras written by tools/train.py"
        )
    try:
        return keras.models.load_model(path)
    except PermissionError:
        raise  # not a damaged file: cli.main names the file and the fix
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        if zipfile.is_zipfile(path):
            reason = " ".join(str(err).split()) or type(err).__name__
        else:  # Keras would say "file not found"
            reason = "not a zip archive"
        raise ExportError(
            f"{path}: cannot load the model, the file is truncated or corrupt ({reason}); "
            "re-run tools/train.py to write it again"
        ) from err


def _format_shape(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def check_image_shape(model, images: np.ndarray, what: str) -> None:
    """Refuses images the model cannot take (another size or channel count), or none."""
    expected = tuple(model.input_shape[1:])
    got = tuple(images.shape[1:])
    if len(images) == 0:
        flag = "--" + what.replace(" ", "_")
        raise ExportError(
            f"no {what}: the export needs at least one; pass {flag} of 1 or more and data "
            "that has such images"
        )
    fits = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))
    if not fits:
        raise ExportError(
            f"the {what} are {_format_shape(got)} (height x width x channels) but the model "
            f"takes {_format_shape(expected)}; pass the data the model was trained on (the data "
            f"flags, e.g. --image_size={expected[0]}, or none to use the training run's data)"
        )


def keras_logits(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    out = [
        model(images[i : i + batch_size].astype(np.float32), training=False).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out)


# ----- SavedModel --------------------------------------------------------------------------
def _serving_fns(model):
    import tensorflow as tf

    expected = tuple(model.input_shape[1:])
    classes = int(model.output_shape[-1])

    def run(image):
        shape = tf.shape(image)
        # Height, width, channels of an image of any rank (padded so a rank-3
        # image compares without a shape error of its own, and fails the check).
        dims = tf.concat([shape, tf.zeros([4], tf.int32)], 0)[1:4]
        ok = tf.logical_and(tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(dims, expected)))
        message = (
            f"image must have shape [batch, {expected[0]}, {expected[1]}, {expected[2]}] "
            "(height, width, channels of the trained model)"
        )
        with tf.control_dependencies([tf.debugging.Assert(ok, [message, "got", shape])]):
            x = tf.cast(image, tf.float32)
        x = tf.ensure_shape(x, (None, *expected))
        # An empty batch skips the model: oneDNN's batch-norm kernels reject one.
        logits = tf.cond(
            tf.shape(x)[0] > 0,
            lambda: tf.cast(model(x, training=False), tf.float32),
            lambda: tf.zeros([0, classes], tf.float32),
        )
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    spec = [None, None, None, None]
    uint8_fn = tf.function(run, input_signature=[tf.TensorSpec(spec, tf.uint8, name="image")])
    float_fn = tf.function(run, input_signature=[tf.TensorSpec(spec, tf.float32, name="image")])
    return uint8_fn, float_fn


def _is_our_saved_model(path: Path) -> bool:
    try:
        marker = json.loads((path / EXPORT_MARKER).read_text())
    except (OSError, ValueError):
        return False
    names = {p.name for p in path.iterdir()}
    return (
        isinstance(marker, dict)
        and marker.get("written_by") == _MARKER_WRITER
        and names <= _SAVED_MODEL_ENTRIES
    )


def _is_tflite_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return not head or head[4:8] == _TFLITE_IDENTIFIER


def check_out_path(out: str | os.PathLike, kind: str) -> Path:
    """Refuses an output path whose content the export would destroy: for a
    SavedModel (``kind`` "saved_model") anything but a new path, an empty
    directory or an earlier SavedModel export of ours; for a TFLite file
    (``kind`` "tflite") a directory or a file that is not a .tflite."""
    out = Path(out)
    if kind == "saved_model":
        if out.is_dir():
            if any(out.iterdir()) and not _is_our_saved_model(out):
                raise ExportError(
                    f"{out} is a non-empty directory that is not a SavedModel written by this "
                    f"exporter (it has no {EXPORT_MARKER} or holds other files); it is left "
                    "alone: pass a new or empty directory as --out"
                )
        elif out.exists() or out.is_symlink():
            raise ExportError(
                f"{out} exists and is not a directory; a SavedModel is a directory: pass a new "
                "directory path as --out"
            )
    elif kind == "tflite":
        if out.is_dir():
            raise ExportError(
                f"{out} is a directory; a TFLite export is one file: pass a file path as --out, "
                f"e.g. {out / 'model.tflite'}"
            )
        if out.exists() and not _is_tflite_file(out):
            raise ExportError(
                f"{out} exists and is not a .tflite model; it is left alone: pass a new file "
                "path (or an earlier .tflite export to replace) as --out"
            )
    else:
        raise ValueError(f"unknown export kind {kind!r}")
    return out


@contextlib.contextmanager
def _staged(out: Path, kind: str):
    """A temporary path beside ``out``, moved over it on success, removed on
    failure (``io_utils.replace_atomic``). ``out`` is checked again
    (``check_out_path``) before it is replaced; an earlier export there is
    moved aside and deleted only once the new one is in place."""
    with replace_atomic(out) as tmp:
        yield tmp
        check_out_path(out, kind)  # again: out may have changed during the export


def export_saved_model(
    model,
    out: str | os.PathLike,
    check_images: np.ndarray,
    tolerance: float = FLOAT_TOLERANCE["none"],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Writes, reloads and checks a SavedModel; returns the check's figures."""
    import keras
    import tensorflow as tf

    out = check_out_path(out, "saved_model")
    check_image_shape(model, check_images, "check images")
    with _staged(out, "saved_model") as tmp:
        uint8_fn, float_fn = _serving_fns(model)
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", uint8_fn)
        archive.add_endpoint("serving_float", float_fn)
        with contextlib.redirect_stdout(io.StringIO()):
            archive.write_out(str(tmp))
        loaded = tf.saved_model.load(str(tmp))
        reference = keras_logits(model, check_images)
        served = loaded.signatures["serving_default"](image=tf.constant(check_images))
        served_float = loaded.signatures["serving_float"](
            image=tf.constant(check_images.astype(np.float32))
        )
        result = {
            "path": str(out),
            "signatures": sorted(loaded.signatures.keys()),
            "outputs": sorted(served.keys()),
            "check_images": len(check_images),
            "max_abs_diff_logits": float(np.abs(served["logits"].numpy() - reference).max()),
            "max_abs_diff_logits_float_input": float(
                np.abs(served_float["logits"].numpy() - reference).max()
            ),
            "max_abs_diff_probabilities": float(
                np.abs(served["probabilities"].numpy() - _softmax(reference)).max()
            ),
        }
        worst = max(result["max_abs_diff_logits"], result["max_abs_diff_logits_float_input"])
        if not worst <= tolerance:
            raise ExportCheckError(
                f"SavedModel check failed: logits differ from Keras by {worst:.3g} "
                f"(tolerance {tolerance:g}); nothing was written to {out}"
            )
        marker = {"written_by": _MARKER_WRITER, "check": result}
        (tmp / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        result["size_bytes"] = _dir_size(tmp)
    log(
        f"SavedModel {out}: signatures {result['signatures']}, max |logits - Keras| "
        f"{result['max_abs_diff_logits']:.2e} over {len(check_images)} images (tolerance {tolerance:g})"
    )
    return result


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ----- TFLite --------------------------------------------------------------------------------
def convert_tflite(
    model,
    quantization: str,
    calibration_images: np.ndarray | None = None,
    int8_input: str = "uint8",
) -> bytes:
    """A .tflite flatbuffer of model with builtin ops only: the exporter's, and
    the latency tables' converter (``none``: float32 in and out, the model's
    own input shape, batch size included). ``int8``: int8 weights and
    activations, calibrated on ``calibration_images``, int8 out, and in
    ``int8_input`` (uint8 pixels for a net; int8 for a piece inside one)."""
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantization!r}; choose one of {QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if calibration_images is None or len(calibration_images) == 0:
            raise ExportError("int8 quantization needs calibration images (training images)")
        check_image_shape(model, calibration_images, "calibration images")

        def representative():
            for image in calibration_images:
                yield [image[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_input not in ("uint8", "int8"):
            raise ExportError(f"int8_input must be 'uint8' or 'int8', got {int8_input!r}")
        converter.inference_input_type = tf.uint8 if int8_input == "uint8" else tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return converter.convert()


class TFLiteRunner:
    """Runs a .tflite classifier on uint8/float pixel batches with the LiteRT
    interpreter, quantising inputs and dequantising outputs as the model needs."""

    def __init__(self, content: bytes, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = None

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, *self.input["shape"][1:]]
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._batch = batch

    def __call__(self, images: np.ndarray, batch_size: int = 100) -> np.ndarray:
        outputs = []
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            self._resize(len(chunk))
            dtype = self.input["dtype"]
            scale, zero = self.input["quantization"]
            if np.issubdtype(dtype, np.integer) and scale:
                info = np.iinfo(dtype)
                chunk = np.clip(np.round(chunk / scale + zero), info.min, info.max)
            self.interpreter.set_tensor(self.input["index"], chunk.astype(dtype))
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self.output["index"])
            scale, zero = self.output["quantization"]
            if np.issubdtype(out.dtype, np.integer) and scale:
                out = (out.astype(np.float32) - zero) * scale
            outputs.append(out.astype(np.float32))
        if not outputs:  # no images: no logits, of the model's output shape
            return np.zeros((0, *self.output["shape"][1:]), np.float32)
        return np.concatenate(outputs)


def check_tflite(
    content: bytes,
    model,
    quantization: str,
    images: np.ndarray,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compares a .tflite with the Keras model on real images."""
    reference = keras_logits(model, images)
    runner = TFLiteRunner(content)
    tflite = runner(images)
    ref_top1, tfl_top1 = reference.argmax(-1), tflite.argmax(-1)
    result = {
        "quantization": quantization,
        "check_images": len(images),
        "input_dtype": np.dtype(runner.input["dtype"]).name,
        "max_abs_diff_logits": float(np.abs(tflite - reference).max()),
        "top1_agreement": float(np.mean(ref_top1 == tfl_top1)),
    }
    if labels is not None:
        result["keras_accuracy"] = float(np.mean(ref_top1 == labels))
        result["tflite_accuracy"] = float(np.mean(tfl_top1 == labels))
        result["accuracy_change"] = result["tflite_accuracy"] - result["keras_accuracy"]
    if quantization == "int8":
        result["passed"] = result["top1_agreement"] >= INT8_MIN_AGREEMENT
        result["criterion"] = f"top-1 agreement >= {INT8_MIN_AGREEMENT:.0%}"
    else:
        tolerance = FLOAT_TOLERANCE[quantization]
        result["passed"] = result["max_abs_diff_logits"] <= tolerance
        result["criterion"] = f"max |logits - Keras| <= {tolerance:g}"
    return result


def export_tflite(
    model,
    out: str | os.PathLike,
    quantization: str,
    check_images: np.ndarray,
    check_labels: np.ndarray | None = None,
    calibration_images: np.ndarray | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Converts, writes, re-reads and checks a .tflite; returns the check's figures."""
    out = check_out_path(out, "tflite")
    check_image_shape(model, check_images, "check images")
    content = convert_tflite(model, quantization, calibration_images)
    with _staged(out, "tflite") as tmp:
        tmp.write_bytes(content)
        result = check_tflite(tmp.read_bytes(), model, quantization, check_images, check_labels)
        result.update(path=str(out), size_bytes=len(content))
        if not result["passed"]:
            raise ExportCheckError(
                f"TFLite ({quantization}) check failed: {_describe(result)}; criterion "
                f"{result['criterion']}; nothing was written to {out}"
            )
    log(f"TFLite {out} ({quantization}, {len(content) / 1024:.1f} KiB): {_describe(result)}")
    return result


def _describe(result: dict[str, Any]) -> str:
    text = (
        f"max |logits - Keras| {result['max_abs_diff_logits']:.2e}, top-1 agreement "
        f"{result['top1_agreement']:.2%} over {result['check_images']} images"
    )
    if "keras_accuracy" in result:
        text += (
            f", accuracy Keras {result['keras_accuracy']:.2%} vs TFLite "
            f"{result['tflite_accuracy']:.2%}"
        )
    return text
