"""Exporting a trained model (pixels -> logits) for serving, each export verified.

- SavedModel: signatures ``serving_default`` (``image``: uint8 pixels) and
  ``serving_float`` (``image``: float32 pixels, finite and in 0-255), both
  returning ``logits`` and ``probabilities`` (float32 [batch, classes]),
  ``classes`` (string [batch]: the top class's name) and ``class_names``
  (string [batch, classes]: every class's name, in the order of the logits).
  Images of the wrong size or channel count are refused with an error naming
  the expected shape; ``serving_float`` refuses NaN, infinite or
  out-of-range pixels. ``export_serving`` writes TensorFlow Serving's layout,
  ``BASE/<version>/``, with warm-up requests in
  ``assets.extra/tf_serving_warmup_requests`` (``PredictionLog`` records);
  ``export_saved_model`` writes one SavedModel directory (the same content).
- TFLite, builtin ops only: ``none`` (float32), ``fp16`` (float16 weights) or
  ``int8`` (full-integer, calibrated on training images; uint8 pixels in,
  int8 logits out, dequantised by ``TFLiteRunner``). ``convert_tflite`` is
  also the converter of the latency tables, so they time what is exported.

Every export is written to a temporary path, reloaded and compared with the
Keras model on real images (a SavedModel's warm-up records are run through
its signatures too), and renamed into place only when it passes; a failed
check raises ExportCheckError, and any failure leaves nothing at the output
path.

An export never deletes what it did not write. A version directory is
written once and never replaced: exporting to an existing version is
refused. The other output paths must be new, an empty directory
(SavedModel), or an earlier export of ours, which is replaced. A SavedModel
of ours holds ``EXPORT_MARKER``; a .tflite of ours is recognised by the
TFLite file identifier. Anything else is refused.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Sequence
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
# The SavedModel's signatures, the name of their one input, and their outputs.
SIGNATURES = ("serving_default", "serving_float")
INPUT_NAME = "image"
OUTPUTS = ("logits", "probabilities", "classes", "class_names")
# TensorFlow Serving's warm-up requests, inside a version directory: up to
# WARMUP_REQUESTS records per signature, one image each (TensorFlow Serving
# reads at most 1,000 records).
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_REQUESTS = 5
MAX_WARMUP_RECORDS = 1000
_SAVED_MODEL_ENTRIES = frozenset(
    {"saved_model.pb", "fingerprint.pb", "variables", "assets", WARMUP_DIR, EXPORT_MARKER}
)
_VERSION = re.compile(r"[0-9]+")
_TFLITE_IDENTIFIER = b"TFL3"  # bytes 4-8 of a TFLite flatbuffer


class ExportError(DenseNASError, ValueError):
    """An export that cannot be made (bad model path, bad option)."""


class ExportCheckError(DenseNASError, RuntimeError):
    """An export that was written but failed its check; nothing was kept."""

    exit_code = 2


class ExportWriteError(DenseNASError, OSError):
    """TensorFlow could not write the export (a full disk, no permission);
    nothing was kept."""


def load_trained_model(path: str | os.PathLike):
    import keras

    path = Path(path)
    if not path.exists():
        raise ExportError(
            f"{path} does not exist; pass the model.keras written by densenas-train (--model)"
        )
    if path.is_dir():
        inside = path / "model.keras"
        hint = f", e.g. {inside}" if inside.is_file() else " in a training run directory"
        raise ExportError(
            f"{path} is a directory; pass the model.keras file written by densenas-train{hint}"
        )
    if path.suffix != ".keras":
        raise ExportError(
            f"{path}: not a .keras model file; pass the model.keras written by densenas-train"
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
            "re-run densenas-train to write it again"
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
def serving_class_names(num_classes: int, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The class names a SavedModel returns: ``names`` (as many as the model's
    classes), or "0".."N-1" when there are none."""
    if names is None:
        return tuple(str(i) for i in range(num_classes))
    names = tuple(str(n) for n in names)
    if len(names) != num_classes:
        raise ExportError(
            f"{len(names)} class names for a model of {num_classes} classes; pass one name per "
            "class of the model (in the order of its logits), or none to number them"
        )
    return names


def _serving_fns(model, class_names: tuple[str, ...]):
    import tensorflow as tf

    expected = tuple(model.input_shape[1:])
    classes = int(model.output_shape[-1])
    shape_message = (
        f"image must have shape [batch, {expected[0]}, {expected[1]}, {expected[2]}] "
        "(height, width, channels of the trained model)"
    )
    range_message = (
        "serving_float takes float32 pixels in 0-255: the image holds NaN, infinity or values "
        "outside 0-255 (send uint8 pixels to serving_default, or scale to 0-255)"
    )

    def run(image):
        shape = tf.shape(image)
        # Height, width, channels of an image of any rank (padded so a rank-3
        # image compares without a shape error of its own, and fails the check).
        dims = tf.concat([shape, tf.zeros([4], tf.int32)], 0)[1:4]
        ok = tf.logical_and(tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(dims, expected)))
        checks = [tf.debugging.Assert(ok, [shape_message, "got", shape])]
        if image.dtype.is_floating:
            # NaN fails both comparisons; the check costs two reductions.
            fits = tf.reduce_all(tf.logical_and(image >= 0.0, image <= 255.0))
            checks.append(tf.debugging.Assert(fits, [range_message]))
        with tf.control_dependencies(checks):
            x = tf.cast(image, tf.float32)
        x = tf.ensure_shape(x, (None, *expected))
        # An empty batch skips the model: oneDNN's batch-norm kernels reject one.
        logits = tf.cond(
            tf.shape(x)[0] > 0,
            lambda: tf.cast(model(x, training=False), tf.float32),
            lambda: tf.zeros([0, classes], tf.float32),
        )
        names = tf.constant(class_names, tf.string)
        top = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.gather(names, top),
            "class_names": tf.tile(names[None], [tf.shape(logits)[0], 1]),
        }

    spec = [None, None, None, None]
    uint8_fn = tf.function(run, input_signature=[tf.TensorSpec(spec, tf.uint8, name=INPUT_NAME)])
    float_fn = tf.function(run, input_signature=[tf.TensorSpec(spec, tf.float32, name=INPUT_NAME)])
    return uint8_fn, float_fn


def warmup_requests(images: np.ndarray) -> list[bytes]:
    """TensorFlow Serving's warm-up records for ``images``: serialized
    ``PredictionLog`` protos, each a ``PredictLog`` whose request sends one
    image to one signature (uint8 to ``serving_default``, float32 to
    ``serving_float``), every image to each signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    records = []
    for signature, dtype in zip(SIGNATURES, (np.uint8, np.float32)):
        for image in images:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature
            request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(image[None].astype(dtype)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            records.append(log.SerializeToString())
    return records


def read_warmup_requests(path: str | os.PathLike) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(signature name, inputs) of each warm-up record in ``path``."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        requests.append((request.model_spec.signature_name, inputs))
    return requests


def _is_our_saved_model(path: Path) -> bool:
    try:
        marker = json.loads((path / EXPORT_MARKER).read_text())
    except (OSError, ValueError):
        return False
    names = {p.name for p in path.iterdir()}
    extra = path / WARMUP_DIR
    return (
        isinstance(marker, dict)
        and marker.get("written_by") == _MARKER_WRITER
        and names <= _SAVED_MODEL_ENTRIES
        and (not extra.exists() or (extra.is_dir() and os.listdir(extra) in ([], [WARMUP_FILE])))
    )


def _is_tflite_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return not head or head[4:8] == _TFLITE_IDENTIFIER


def next_version(base: str | os.PathLike) -> int:
    """The version an export to the model base path ``base`` gets by default:
    one above the highest there (TensorFlow Serving serves the highest), 1
    in a new or empty base path."""
    base = Path(base)
    if not base.is_dir():
        return 1
    versions = [int(p.name) for p in base.iterdir() if _VERSION.fullmatch(p.name)]
    return max(versions, default=0) + 1


def check_version_path(base: str | os.PathLike, version: int | None = None) -> tuple[Path, int]:
    """(base, version) of an export to TensorFlow Serving's layout
    ``base/<version>/`` (``version`` None: ``next_version``). Refused: a base
    path that is a file or a SavedModel itself, a version below 1, and a
    version that exists (a version is written once and never replaced)."""
    base = Path(base)
    if base.exists() and not base.is_dir():
        raise ExportError(
            f"{base} exists and is not a directory; --out_dir is the model base path, the "
            "directory that holds one directory per version: pass a directory path"
        )
    if (base / "saved_model.pb").exists():
        raise ExportError(
            f"{base} is a SavedModel itself (an unversioned export); TensorFlow Serving reads "
            "versions inside the model base path: pass a new directory as --out_dir"
        )
    if version is None:
        version = next_version(base)
    elif not isinstance(version, int) or version < 1:
        raise ExportError(f"version {version!r}: pass a whole number of 1 or more as --version")
    target = base / str(version)
    if target.exists() or target.is_symlink():
        raise ExportError(
            f"{target} exists: version {version} is already exported and is never replaced; "
            f"pass another --version, or none to write the next one ({next_version(base)})"
        )
    return base, version


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


@contextlib.contextmanager
def _tensorflow_writes(where: Path, fix: str):
    """TensorFlow's own I/O errors while writing ``where`` (not OSErrors) as one
    ExportWriteError naming the path."""
    import tensorflow as tf

    try:
        yield
    except (
        tf.errors.ResourceExhaustedError,
        tf.errors.PermissionDeniedError,
        tf.errors.UnavailableError,
        tf.errors.DataLossError,
    ) as err:
        reason = " ".join(str(err.message).split()).rstrip(":;") or type(err).__name__
        raise ExportWriteError(
            f"cannot write the SavedModel {where}: {reason} ({type(err).__name__}); {fix}"
        ) from err


def _write_saved_model(
    model,
    tmp: Path,
    out: Path,
    check_images: np.ndarray,
    tolerance: float,
    class_names: Sequence[str] | None,
    warmup: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Writes the SavedModel into the new directory ``tmp`` (to become ``out``),
    reloads and checks it; returns the check's figures."""
    import keras
    import tensorflow as tf

    names = serving_class_names(int(model.output_shape[-1]), class_names)
    fix = "free disk space, or pick a writable directory on a disk with room, and re-run"
    with _tensorflow_writes(out, fix):
        uint8_fn, float_fn = _serving_fns(model, names)
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURES[0], uint8_fn)
        archive.add_endpoint(SIGNATURES[1], float_fn)
        with contextlib.redirect_stdout(io.StringIO()):
            archive.write_out(str(tmp))
        warmup_images = check_images[:warmup]
        if len(warmup_images):
            (tmp / WARMUP_DIR).mkdir()
            with tf.io.TFRecordWriter(str(tmp / WARMUP_DIR / WARMUP_FILE)) as writer:
                for record in warmup_requests(warmup_images):
                    writer.write(record)
    loaded = tf.saved_model.load(str(tmp))
    reference = keras_logits(model, check_images)
    served = loaded.signatures[SIGNATURES[0]](image=tf.constant(check_images))
    served_float = loaded.signatures[SIGNATURES[1]](
        image=tf.constant(check_images.astype(np.float32))
    )
    result = {
        "path": str(out),
        **extra,
        "signatures": sorted(loaded.signatures.keys()),
        "outputs": sorted(served.keys()),
        "class_names": list(names),
        "check_images": len(check_images),
        "max_abs_diff_logits": float(np.abs(served["logits"].numpy() - reference).max()),
        "max_abs_diff_logits_float_input": float(
            np.abs(served_float["logits"].numpy() - reference).max()
        ),
        "max_abs_diff_probabilities": float(
            np.abs(served["probabilities"].numpy() - _softmax(reference)).max()
        ),
        "warmup_requests": 0,
    }
    worst = max(result["max_abs_diff_logits"], result["max_abs_diff_logits_float_input"])
    if not worst <= tolerance:
        raise ExportCheckError(
            f"SavedModel check failed: logits differ from Keras by {worst:.3g} "
            f"(tolerance {tolerance:g}); nothing was written to {out}"
        )
    top = np.array(names)[served["logits"].numpy().argmax(-1)]
    if [c.decode() for c in served["classes"].numpy()] != top.tolist():
        raise ExportCheckError(
            f"SavedModel check failed: its classes are not the names of its top logits; "
            f"nothing was written to {out}"
        )
    if len(warmup_images):  # as TensorFlow Serving runs them when it loads the model
        for signature, inputs in read_warmup_requests(tmp / WARMUP_DIR / WARMUP_FILE):
            loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
            result["warmup_requests"] += 1
    marker = {
        "written_by": _MARKER_WRITER,
        "check": result,
        "warmup": "the first check images, one a request, each sent to every signature",
    }
    with _tensorflow_writes(out, fix):
        (tmp / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    result["size_bytes"] = _dir_size(tmp)
    return result


def _check_saved_model_inputs(model, check_images, class_names, warmup) -> None:
    """Refuses what a SavedModel export cannot take, before anything is written."""
    check_image_shape(model, check_images, "check images")
    serving_class_names(int(model.output_shape[-1]), class_names)
    most = MAX_WARMUP_RECORDS // len(SIGNATURES)
    if not 0 <= warmup <= most:
        raise ExportError(
            f"{warmup} warm-up requests per signature: pass 0 to {most} (TensorFlow Serving "
            f"reads at most {MAX_WARMUP_RECORDS} records, and each request goes to "
            f"{len(SIGNATURES)} signatures)"
        )


def export_saved_model(
    model,
    out: str | os.PathLike,
    check_images: np.ndarray,
    tolerance: float = FLOAT_TOLERANCE["none"],
    log: Callable[[str], None] = print,
    *,
    class_names: Sequence[str] | None = None,
    warmup: int = WARMUP_REQUESTS,
) -> dict[str, Any]:
    """Writes, reloads and checks one SavedModel directory ``out`` (replacing
    an earlier export of ours there); returns the check's figures. For
    TensorFlow Serving's versioned layout see ``export_serving``.
    ``class_names``: one per class (None: "0".."N-1"); ``warmup``: warm-up
    requests per signature, made of the first check images (0: none)."""
    out = check_out_path(out, "saved_model")
    _check_saved_model_inputs(model, check_images, class_names, warmup)
    with _staged(out, "saved_model") as tmp:
        result = _write_saved_model(
            model, tmp, out, check_images, tolerance, class_names, warmup, {}
        )
    _log_saved_model(log, result, tolerance)
    return result


def export_serving(
    model,
    base: str | os.PathLike,
    check_images: np.ndarray,
    version: int | None = None,
    tolerance: float = FLOAT_TOLERANCE["none"],
    log: Callable[[str], None] = print,
    *,
    class_names: Sequence[str] | None = None,
    warmup: int = WARMUP_REQUESTS,
) -> dict[str, Any]:
    """Writes, reloads and checks a SavedModel as version ``version`` (None:
    ``next_version``) of the model base path ``base``: TensorFlow Serving's
    layout ``base/<version>/``, with warm-up requests (``warmup`` per
    signature, 0: none) in ``assets.extra/tf_serving_warmup_requests``.
    Written in a hidden temporary directory in ``base`` (a name TensorFlow
    Serving ignores) and renamed to ``base/<version>`` once it passed its
    check, so no half-written version is ever visible; on any failure the
    temporary directory is removed (and ``base`` too, if this call made it
    and it is empty). No other entry of ``base`` is touched. Returns the
    check's figures, with ``base`` and ``version``."""
    base, version = check_version_path(base, version)
    _check_saved_model_inputs(model, check_images, class_names, warmup)
    made_base = not base.exists()
    base.mkdir(parents=True, exist_ok=True)
    target = base / str(version)
    tmp = base / f".{version}.tmp-{os.getpid()}"
    try:
        result = _write_saved_model(
            model,
            tmp,
            target,
            check_images,
            tolerance,
            class_names,
            warmup,
            {"base": str(base), "version": version},
        )
        try:
            if target.exists() or target.is_symlink():  # rename would take an empty directory
                raise OSError(errno.EEXIST, "exists", str(target))
            os.rename(tmp, target)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            raise ExportError(
                f"{target} appeared while exporting (another export?); it is left alone: "
                "re-run to write the next version"
            ) from err
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        if made_base and base.is_dir() and not any(base.iterdir()):
            base.rmdir()
    _log_saved_model(log, result, tolerance)
    return result


def _log_saved_model(log: Callable[[str], None], result: dict[str, Any], tolerance: float):
    log(
        f"SavedModel {result['path']}: signatures {result['signatures']}, max |logits - Keras| "
        f"{result['max_abs_diff_logits']:.2e} over {result['check_images']} images (tolerance "
        f"{tolerance:g}), {result['warmup_requests']} warm-up requests, classes "
        f"{_short_list(result['class_names'])}"
    )


def _short_list(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)})" if len(names) > most else "")


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
    *,
    calibration_requested: int | None = None,
) -> dict[str, Any]:
    """Converts, writes, re-reads and checks a .tflite; returns the check's
    figures. ``calibration_requested``: how many calibration images the caller
    asked for; int8 with fewer ``calibration_images`` is refused, naming both
    counts (``check_calibration_count``)."""
    out = check_out_path(out, "tflite")
    check_image_shape(model, check_images, "check images")
    if quantization == "int8" and calibration_requested is not None:
        available = 0 if calibration_images is None else len(calibration_images)
        check_calibration_count(available, calibration_requested)
    content = convert_tflite(model, quantization, calibration_images)
    with _staged(out, "tflite") as tmp:
        tmp.write_bytes(content)
        result = check_tflite(tmp.read_bytes(), model, quantization, check_images, check_labels)
        result.update(path=str(out), size_bytes=len(content))
        if quantization == "int8":
            result["calibration_images"] = len(calibration_images)
        if not result["passed"]:
            hint = ""
            if quantization == "int8":
                hint = (
                    f"; calibrated on {len(calibration_images)} training images (more, "
                    "e.g. --calibration_images=500, can raise the agreement)"
                )
            raise ExportCheckError(
                f"TFLite ({quantization}) check failed: {_describe(result)}; criterion "
                f"{result['criterion']}{hint}; nothing was written to {out}"
            )
    log(f"TFLite {out} ({quantization}, {len(content) / 1024:.1f} KiB): {_describe(result)}")
    return result


def check_calibration_count(available: int, requested: int) -> None:
    """Refuses an int8 calibration on fewer training images than requested."""
    if available < requested:
        fix = f"pass --calibration_images={available} or less, or" if available else "pass"
        raise ExportError(
            f"int8 calibration asks for {requested} training images (--calibration_images) "
            f"but the data has {available}; {fix} data with more training images (a larger "
            "--train_limit)"
        )


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
