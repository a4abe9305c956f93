"""Export: SavedModel signatures, numerics and class names, TensorFlow Serving's
versioned layout and its warm-up records (read back in a fresh process), float,
fp16 and int8 TFLite against Keras, failed checks and failed writes that leave
nothing behind, output paths never deleted unless ours, refused inputs (image
size, no images, missing or corrupt model, too few calibration images), clear
errors at the serving signature, and the latency tables' converter being the
exporter's. (The binaries are run in test_export_tools.py.)"""

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import python_env

from densenas_tf.exporting import export as exporting
from densenas_tf.exporting.export import (
    ExportCheckError,
    ExportError,
    ExportWriteError,
    TFLiteRunner,
)
from densenas_tf.latency import measure as latency_measure

# The fp16 file's largest logit error against Keras allowed: float16 keeps 11
# significant bits, so each weight moves by up to 2**-11 of itself (5e-4), which
# the small net's logits (up to about 7) carry as errors of about 1e-2 (1.2e-2
# measured). Weights in int8 instead (dynamic-range quantisation): 6.5e-2.
FP16_ATOL = 0.03

FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
# What a version directory of TensorFlow Serving's layout holds.
VERSION_ENTRIES = [
    "assets", "assets.extra", "densenas_export.json", "fingerprint.pb", "saved_model.pb",
    "variables",
]  # fmt: skip


@pytest.fixture(scope="module")
def model(trained_small_net):
    run_dir, _, _ = trained_small_net
    return keras.models.load_model(run_dir / "model.keras")


def _model_path(trained_small_net) -> Path:
    return trained_small_net[0] / "model.keras"


def test_saved_model_signatures_and_numerics(model, trained_small_net, tmp_path):
    _, _, data = trained_small_net
    images = data.test_images[:300]
    result = exporting.export_saved_model(model, tmp_path / "sm", images, log=lambda s: None)
    assert result["signatures"] == ["serving_default", "serving_float"]
    assert result["max_abs_diff_logits"] <= 1e-4
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    default = loaded.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["image"]
    assert default.structured_input_signature[1]["image"].dtype == tf.uint8
    assert loaded.signatures["serving_float"].structured_input_signature[1]["image"].dtype == (
        tf.float32
    )
    out = default(image=tf.constant(images))
    assert sorted(out) == ["class_names", "classes", "logits", "probabilities"]
    reference = model(images.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), reference, atol=1e-4)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    # No names given: the classes are numbered, in the order of the logits.
    numbered = [str(i) for i in range(10)]
    assert result["class_names"] == numbered
    assert [c.decode() for c in out["classes"].numpy()] == [
        str(i) for i in out["logits"].numpy().argmax(-1)
    ]
    assert out["class_names"].shape == (300, 10)
    assert {tuple(row) for row in out["class_names"].numpy().astype(str)} == {tuple(numbered)}
    as_float = loaded.signatures["serving_float"](image=tf.constant(images.astype(np.float32)))
    np.testing.assert_allclose(as_float["logits"].numpy(), out["logits"].numpy(), atol=1e-5)


def test_serving_signatures_refuse_images_of_the_wrong_shape_or_range(
    model, tmp_path, trained_small_net
):
    _, _, data = trained_small_net
    exporting.export_saved_model(model, tmp_path / "sm", data.test_images[:20], log=lambda s: None)
    signatures = tf.saved_model.load(str(tmp_path / "sm")).signatures
    serve = signatures["serving_default"]
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"image must have shape \[batch, 28, 28, 1\]"
    ):
        serve(image=tf.zeros([1, 32, 32, 1], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image must have shape"):
        serve(image=tf.zeros([1, 28, 28, 3], tf.uint8))
    # One image without its batch axis: the same documented error, not a shape
    # mismatch inside the check itself.
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"image must have shape \[batch, 28, 28, 1\]"
    ):
        serve(image=tf.zeros([28, 28, 1], tf.uint8))
    # Float pixels: finite and in 0-255, as documented, else refused.
    serve_float = signatures["serving_float"]
    for bad in (np.nan, np.inf, -1.0, 255.5, 300.0):
        image = np.full((2, 28, 28, 1), 100.0, np.float32)
        image[1, 3, 4, 0] = bad
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"serving_float takes float32 pixels in 0-255: the image holds NaN, infinity "
            r"or values outside 0-255",
        ):
            serve_float(image=tf.constant(image))
    edges = np.zeros((2, 28, 28, 1), np.float32)
    edges[1] = 255.0
    np.testing.assert_allclose(
        serve_float(image=tf.constant(edges))["logits"].numpy(),
        model(edges, training=False).numpy(),
        atol=1e-4,
    )


def test_serving_an_empty_batch_returns_empty_outputs(model, tmp_path, trained_small_net):
    _, _, data = trained_small_net
    exporting.export_saved_model(model, tmp_path / "sm", data.test_images[:20], log=lambda s: None)
    signatures = tf.saved_model.load(str(tmp_path / "sm")).signatures
    for name, dtype in (("serving_default", tf.uint8), ("serving_float", tf.float32)):
        out = signatures[name](image=tf.zeros([0, 28, 28, 1], dtype))
        assert {k: (tuple(v.shape), v.dtype) for k, v in out.items()} == {
            "logits": ((0, 10), tf.float32),
            "probabilities": ((0, 10), tf.float32),
            "classes": ((0,), tf.string),
            "class_names": ((0, 10), tf.string),
        }


def _builtin_only(path: Path) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    names = {op["op_name"] for op in interpreter._get_ops_details()}
    return bool(names) and not any(n.startswith("Flex") or n == "CUSTOM" for n in names)


def _litert_logits(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of a .tflite file run here by the LiteRT interpreter (not by the
    exporter's TFLiteRunner), all images in one batch: float pixels into a
    float input; into a uint8 input the uint8 pixels as they are, which it must
    take unscaled (scale 1, zero point 0); an int8 output dequantised by its
    own scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    given = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(given["index"], [len(images), *images.shape[1:]])
    interpreter.allocate_tensors()
    given, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if given["dtype"] == np.uint8:
        assert images.dtype == np.uint8 and given["quantization"] == (1.0, 0), given
        interpreter.set_tensor(given["index"], images)
    else:
        assert given["dtype"] == np.float32, given
        interpreter.set_tensor(given["index"], images.astype(np.float32))
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        assert scale > 0, out
        return (logits.astype(np.float32) - zero) * scale
    assert out["dtype"] == np.float32, out
    return logits


def test_float_tflite_matches_keras_within_1e_4(model, trained_small_net, tmp_path):
    _, _, data = trained_small_net
    images, labels = data.test_images[:500], data.test_labels[:500]
    result = exporting.export_tflite(
        model, tmp_path / "m.tflite", "none", images, labels, log=lambda s: None
    )
    assert result["max_abs_diff_logits"] <= 1e-4 and result["input_dtype"] == "float32"
    assert _builtin_only(tmp_path / "m.tflite")
    runner = TFLiteRunner((tmp_path / "m.tflite").read_bytes())
    logits = runner(images)
    np.testing.assert_allclose(logits, keras_logits := model(images.astype(np.float32)), atol=1e-4)
    assert logits.shape == tuple(keras_logits.shape)
    empty = runner(images[:0])
    assert (empty.shape, empty.dtype) == ((0, 10), np.float32)


def test_fp16_tflite_matches_keras_and_is_smaller_than_float(model, trained_small_net, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    _, _, data = trained_small_net
    images, labels = data.test_images[:300], data.test_labels[:300]
    out = tmp_path / "m16.tflite"
    result = exporting.export_tflite(model, out, "fp16", images, labels, log=lambda s: None)
    assert result["passed"] and result["input_dtype"] == "float32"
    assert result["size_bytes"] == out.stat().st_size
    interpreter = Interpreter(model_path=str(out))
    interpreter.allocate_tensors()
    (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert (inp["dtype"], outp["dtype"]) == (np.float32, np.float32)
    logits = TFLiteRunner(out.read_bytes())(images)
    reference = model(images.astype(np.float32), training=False).numpy()
    # float16 weights: logits within the exporter's fp16 tolerance, same top-1.
    np.testing.assert_allclose(logits, reference, atol=exporting.FLOAT_TOLERANCE["fp16"])
    assert np.mean(logits.argmax(-1) == reference.argmax(-1)) >= 0.99
    # The file run here, against Keras, to this test's own tolerance.
    here = _litert_logits(out, images)
    assert here.shape == reference.shape
    np.testing.assert_allclose(here, reference, rtol=0, atol=FP16_ATOL)
    assert np.mean(here.argmax(-1) == reference.argmax(-1)) >= 0.99
    float_size = len(exporting.convert_tflite(model, "none"))
    assert out.stat().st_size < 0.75 * float_size
    assert _builtin_only(out)


def test_int8_tflite_agrees_with_keras_on_98_percent(model, trained_small_net, tmp_path):
    _, metrics, data = trained_small_net
    images, labels = data.test_images[:1000], data.test_labels[:1000]
    result = exporting.export_tflite(
        model,
        tmp_path / "m8.tflite",
        "int8",
        images,
        labels,
        calibration_images=data.train_images[:200],
        log=lambda s: None,
    )
    assert result["top1_agreement"] >= 0.98
    assert result["input_dtype"] == "uint8"
    assert abs(result["accuracy_change"]) <= 0.02
    assert result["keras_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert _builtin_only(tmp_path / "m8.tflite")
    assert result["size_bytes"] == (tmp_path / "m8.tflite").stat().st_size
    # The file run here on the uint8 pixels, against Keras: top-1 the same on
    # at least 98 % of the 1,000 images, accuracy within 2 points, and the
    # exporter's figures those found here (2 images of slack: Keras's logits
    # of a near-tie can round differently in the exporter's batches).
    int8_top1 = _litert_logits(tmp_path / "m8.tflite", images).argmax(-1)
    keras_top1 = model(images.astype(np.float32), training=False).numpy().argmax(-1)
    agreement = float(np.mean(int8_top1 == keras_top1))
    assert agreement >= 0.98, agreement
    change = float(np.mean(int8_top1 == labels) - np.mean(keras_top1 == labels))
    assert abs(change) <= 0.02, change
    assert result["top1_agreement"] == pytest.approx(agreement, abs=0.002)
    assert result["accuracy_change"] == pytest.approx(change, abs=0.002)


def test_a_failed_check_exits_and_leaves_no_artefact(
    model, trained_small_net, tmp_path, monkeypatch
):
    _, _, data = trained_small_net
    monkeypatch.setattr(exporting, "INT8_MIN_AGREEMENT", 1.01)  # impossible to meet
    out = tmp_path / "out" / "m8.tflite"
    with pytest.raises(ExportCheckError, match="nothing was written"):
        exporting.export_tflite(
            model, out, "int8", data.test_images[:100], data.test_labels[:100],
            calibration_images=data.train_images[:50], log=lambda s: None,
        )  # fmt: skip
    assert not out.exists() and list(out.parent.iterdir()) == []
    with pytest.raises(ExportCheckError, match="nothing was written"):
        exporting.export_saved_model(
            model, tmp_path / "sm", data.test_images[:10], tolerance=-1.0, log=lambda s: None
        )
    with pytest.raises(
        ExportCheckError, match=f"nothing was written to {tmp_path / 'base' / '1'}$"
    ):
        exporting.export_serving(
            model, tmp_path / "base", data.test_images[:10], tolerance=-1.0, log=lambda s: None
        )
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ----- TensorFlow Serving's layout: BASE/<version>/ with warm-up records ------------------
def _tree(path: Path) -> dict[str, str]:
    """Every file under path (relative name -> SHA-256 of its bytes)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# Run in a fresh Python: loads a version directory as TensorFlow Serving would,
# reads its warm-up records with TensorFlow Serving's protos and runs each
# through the signature it names; prints what it found as JSON.
READ_BACK = r"""
import json, sys
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

version = sys.argv[1]
loaded = tf.saved_model.load(version)
found = []
for record in tf.data.TFRecordDataset(version + "/assets.extra/tf_serving_warmup_requests"):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    signature = loaded.signatures[request.model_spec.signature_name]
    served = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    found.append({
        "log_type": log.WhichOneof("log_type"),
        "signature": request.model_spec.signature_name,
        "inputs": {k: [v.dtype.name, list(v.shape)] for k, v in inputs.items()},
        "pixels": inputs["image"].ravel().tolist(),
        "outputs": {k: [v.dtype.name, list(v.shape)] for k, v in served.items()},
        "classes": [c.decode() for c in served["classes"].numpy()],
        "class_names": [[c.decode() for c in row] for row in served["class_names"].numpy()],
        "logits": served["logits"].numpy().tolist(),
    })
print(json.dumps(found))
"""


def test_versioned_export_and_its_warmup_records_served_in_a_fresh_process(
    model, trained_small_net, tmp_path
):
    _, _, data = trained_small_net
    base = tmp_path / "serving"
    result = exporting.export_serving(
        model, base, data.test_images[:40], class_names=FASHION_NAMES, log=lambda s: None
    )
    assert (result["version"], result["path"]) == (1, str(base / "1"))
    assert result["class_names"] == FASHION_NAMES and result["warmup_requests"] == 10
    assert [p.name for p in base.iterdir()] == ["1"]
    assert sorted(p.name for p in (base / "1").iterdir()) == VERSION_ENTRIES
    assert [p.name for p in (base / "1" / "assets.extra").iterdir()] == [WARMUP.name]

    done = subprocess.run(
        [sys.executable, "-c", READ_BACK, str(base / "1")],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(done.stdout.splitlines()[-1])
    # Five real test images, each sent once to each signature.
    assert [r["signature"] for r in records] == ["serving_default"] * 5 + ["serving_float"] * 5
    assert {r["log_type"] for r in records} == {"predict_log"}
    for i, record in enumerate(records):
        image = data.test_images[i % 5]
        dtype = "uint8" if record["signature"] == "serving_default" else "float32"
        assert record["inputs"] == {"image": [dtype, [1, 28, 28, 1]]}
        assert record["pixels"] == image.ravel().tolist()
        assert record["outputs"] == {
            "logits": ["float32", [1, 10]],
            "probabilities": ["float32", [1, 10]],
            "classes": ["string", [1]],
            "class_names": ["string", [1, 10]],
        }
        assert record["class_names"] == [FASHION_NAMES]
        reference = model(image[None].astype(np.float32), training=False).numpy()
        np.testing.assert_allclose(record["logits"], reference, atol=1e-4)
        assert record["classes"] == [FASHION_NAMES[int(reference.argmax())]]


def test_re_exporting_adds_a_version_and_never_touches_one(model, trained_small_net, tmp_path):
    _, _, data = trained_small_net
    images = data.test_images[:10]
    base = tmp_path / "serving"
    exporting.export_serving(model, base, images, log=lambda s: None)
    (base / "notes.txt").write_text("not a version")  # other entries are left alone
    first = _tree(base / "1")
    result = exporting.export_serving(model, base, images[:5], log=lambda s: None)
    assert (result["version"], result["check_images"]) == (2, 5)
    assert _tree(base / "1") == first  # byte for byte
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "notes.txt"]
    marker = json.loads((base / "2" / exporting.EXPORT_MARKER).read_text())
    assert marker["check"]["version"] == 2 and marker["check"]["check_images"] == 5

    # An existing version is refused, and stays as it was.
    with pytest.raises(
        ExportError,
        match=f"^{base / '1'} exists: version 1 is already exported and is never replaced; "
        r"pass another --version, or none to write the next one \(3\)$",
    ):
        exporting.export_serving(model, base, images, version=1, log=lambda s: None)
    assert _tree(base / "1") == first
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "notes.txt"]
    assert (base / "notes.txt").read_text() == "not a version"


def test_next_version_and_refused_versions_without_a_model(tmp_path):
    base = tmp_path / "base"
    assert exporting.next_version(base) == 1  # no such directory yet
    for name in ("1", "3", "10", ".11.tmp-123", "latest", "12a"):
        (base / name).mkdir(parents=True)
    (base / "20.txt").write_text("")
    assert exporting.next_version(base) == 11
    assert exporting.check_version_path(base) == (base, 11)
    assert exporting.check_version_path(base, 2) == (base, 2)
    with pytest.raises(ExportError, match=f"^{base / '3'} exists: version 3 .* next one \\(11\\)$"):
        exporting.check_version_path(base, 3)
    with pytest.raises(ExportError, match="pass a whole number of 1 or more as --version"):
        exporting.check_version_path(base, 0)
    # A base path that is a file, or a SavedModel itself (an unversioned export).
    with pytest.raises(ExportError, match=f"^{base / '20.txt'} exists and is not a directory"):
        exporting.check_version_path(base / "20.txt")
    (base / "1" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ExportError, match=f"^{base / '1'} is a SavedModel itself"):
        exporting.check_version_path(base / "1")


def test_warmup_records_are_prediction_logs_of_each_signature():
    from tensorflow_serving.apis import prediction_log_pb2

    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    records = [
        prediction_log_pb2.PredictionLog.FromString(r) for r in exporting.warmup_requests(images)
    ]
    requests = [r.predict_log.request for r in records]
    assert [r.model_spec.signature_name for r in requests] == (
        ["serving_default"] * 3 + ["serving_float"] * 3
    )
    for i, request in enumerate(requests):
        assert list(request.inputs) == ["image"]
        array = tf.make_ndarray(request.inputs["image"])
        assert array.dtype == (np.uint8 if i < 3 else np.float32)
        np.testing.assert_array_equal(array, images[i % 3][None])


def test_class_names_must_be_one_per_class():
    assert exporting.serving_class_names(3) == ("0", "1", "2")
    assert exporting.serving_class_names(2, ["cat", "dog"]) == ("cat", "dog")
    with pytest.raises(
        ExportError, match=r"^2 class names for a model of 3 classes; pass one name per class"
    ):
        exporting.serving_class_names(3, ["cat", "dog"])


def _full_disk(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, "/some/where/tf_serving_warmup_requests; No space left on device"
    )


def _write_half_then_deny(archive, filepath, *args, **kwargs):
    """Writes half a SavedModel, then fails as TensorFlow does on forbidden storage."""
    (Path(filepath) / "variables").mkdir(parents=True)
    (Path(filepath) / "saved_model.pb").write_bytes(b"half")
    raise tf.errors.PermissionDeniedError(None, None, f"{filepath}/variables; Permission denied")


@pytest.mark.parametrize("fault", ["full_disk_at_warmup", "denied_at_write_out"])
def test_a_failed_write_leaves_no_version_behind(
    model, trained_small_net, tmp_path, monkeypatch, fault
):
    _, _, data = trained_small_net
    images = data.test_images[:10]
    base = tmp_path / "serving"
    (base / "1" / "variables").mkdir(parents=True)  # an earlier version, left alone
    (base / "1" / "saved_model.pb").write_bytes(b"version 1")
    before = _tree(base)
    if fault == "full_disk_at_warmup":
        monkeypatch.setattr(exporting, "warmup_requests", _full_disk)
        reason = r"No space left on device \(ResourceExhaustedError\)"
    else:
        # keras.export.ExportArchive() makes an archive of its backend's class.
        archive_class = type(keras.export.ExportArchive())
        monkeypatch.setattr(archive_class, "write_out", _write_half_then_deny)
        reason = r"Permission denied \(PermissionDeniedError\)"
    with pytest.raises(
        ExportWriteError, match=f"^cannot write the SavedModel {base / '2'}: .*{reason}; free"
    ) as caught:
        exporting.export_serving(model, base, images, log=lambda s: None)
    assert "\n" not in str(caught.value)
    assert [p.name for p in base.iterdir()] == ["1"] and _tree(base) == before
    if fault == "denied_at_write_out":  # a base path the failed export made goes with it
        with pytest.raises(ExportWriteError):
            exporting.export_serving(model, tmp_path / "new", images, log=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]


# ----- output paths: never delete what the export did not write -----------------------------
def test_saved_model_replaces_its_own_export_and_refuses_other_directories(
    model, trained_small_net, tmp_path
):
    _, _, data = trained_small_net
    images = data.test_images[:10]
    out = tmp_path / "sm"
    out.mkdir()  # an empty directory is taken
    exporting.export_saved_model(model, out, images, log=lambda s: None)
    marker = json.loads((out / exporting.EXPORT_MARKER).read_text())
    assert marker["written_by"] == "densenas_tf.exporting.export_saved_model"
    assert marker["check"]["check_images"] == 10
    first = (out / "saved_model.pb").stat().st_mtime_ns
    # Our own earlier export is replaced, nothing left beside it.
    result = exporting.export_saved_model(model, out, images[:5], log=lambda s: None)
    assert (out / "saved_model.pb").stat().st_mtime_ns != first
    assert json.loads((out / exporting.EXPORT_MARKER).read_text())["check"]["check_images"] == 5
    assert result["size_bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]

    # Someone else's directory, or our export with a file of theirs added: left alone.
    theirs = tmp_path / "theirs"
    (theirs / "sub").mkdir(parents=True)
    (theirs / "notes.txt").write_text("keep me")
    (theirs / "sub" / "data.bin").write_bytes(b"\x00\x01")
    # Its warm-up file is ours; another file beside it is not.
    assert [p.name for p in (out / "assets.extra").iterdir()] == ["tf_serving_warmup_requests"]
    (out / "assets.extra" / "requests.txt").write_text("theirs")
    (out / "mine.txt").write_text("also mine")
    for path in (theirs, out):
        before = sorted((str(p), p.read_bytes()) for p in path.rglob("*") if p.is_file())
        with pytest.raises(
            ExportError,
            match=f"^{path} is a non-empty directory that is not a SavedModel written by this "
            "exporter .*pass a new or empty directory as --out$",
        ):
            exporting.export_saved_model(model, path, images, log=lambda s: None)
        assert sorted((str(p), p.read_bytes()) for p in path.rglob("*") if p.is_file()) == before
    # A file is no SavedModel directory.
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    with pytest.raises(ExportError, match=f"^{a_file} exists and is not a directory"):
        exporting.export_saved_model(model, a_file, images, log=lambda s: None)
    assert a_file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "sm", "theirs"]


def test_tflite_refuses_a_directory_or_another_file_and_replaces_a_tflite(
    model, trained_small_net, tmp_path
):
    _, _, data = trained_small_net
    images = data.test_images[:10]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(
        ExportError, match=f"^{folder} is a directory; .* e.g. {folder / 'model.tflite'}$"
    ):
        exporting.export_tflite(model, folder, "none", images, log=lambda s: None)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    other = tmp_path / "model.keras"
    shutil.copy(_model_path(trained_small_net), other)
    before = other.read_bytes()
    with pytest.raises(ExportError, match=f"^{other} exists and is not a .tflite model"):
        exporting.export_tflite(model, other, "none", images, log=lambda s: None)
    assert other.read_bytes() == before
    # An earlier .tflite (a file with the TFLite identifier) is replaced.
    out = tmp_path / "m.tflite"
    out.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(100))
    result = exporting.export_tflite(model, out, "none", images, log=lambda s: None)
    assert result["size_bytes"] == out.stat().st_size > 108
    logits = TFLiteRunner(out.read_bytes())(images)
    np.testing.assert_allclose(logits, model(images.astype(np.float32)).numpy(), atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "m.tflite", "model.keras"]


# ----- refused inputs ----------------------------------------------------------------------
def test_images_of_another_size_than_the_model_are_refused(model, trained_small_net, tmp_path):
    _, _, data = trained_small_net
    images = data.test_images[:20]
    bigger = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))  # 32x32x1
    colour = np.repeat(images, 3, axis=-1)  # 28x28x3
    message = (
        r"^the {what} are {got} \(height x width x channels\) but the model takes 28x28x1; "
        r"pass the data the model was trained on \(the data flags, e\.g\. --image_size=28, "
        r"or none to use the training run's data\)$"
    )
    for bad, got in ((bigger, "32x32x1"), (colour, "28x28x3")):
        with pytest.raises(ExportError, match=message.format(what="check images", got=got)):
            exporting.export_saved_model(model, tmp_path / "sm", bad, log=lambda s: None)
        with pytest.raises(ExportError, match=message.format(what="check images", got=got)):
            exporting.export_tflite(model, tmp_path / "m.tflite", "none", bad, log=lambda s: None)
        with pytest.raises(ExportError, match=message.format(what="calibration images", got=got)):
            exporting.export_tflite(
                model, tmp_path / "m8.tflite", "int8", images, calibration_images=bad,
                log=lambda s: None,
            )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_no_check_images_is_refused(model, trained_small_net, tmp_path):
    _, _, data = trained_small_net
    none = data.test_images[:0]
    with pytest.raises(ExportError, match=r"^no check images: .* pass --check_images of 1 or more"):
        exporting.export_saved_model(model, tmp_path / "sm", none, log=lambda s: None)
    with pytest.raises(ExportError, match=r"^no check images: .* pass --check_images of 1 or more"):
        exporting.export_tflite(model, tmp_path / "m.tflite", "none", none, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_model_or_a_directory_is_named_as_such(tmp_path):
    missing = tmp_path / "missing.keras"
    with pytest.raises(
        ExportError,
        match=f"^{missing} does not exist; pass the model.keras written by densenas-train "
        r"\(--model\)$",
    ):
        exporting.load_trained_model(missing)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(ExportError, match=f"^{run_dir} is a directory; .* in a training run"):
        exporting.load_trained_model(run_dir)
    (run_dir / "model.keras").write_bytes(b"")
    with pytest.raises(ExportError, match=f"e.g. {run_dir / 'model.keras'}$"):
        exporting.load_trained_model(run_dir)


def test_int8_calibration_on_fewer_images_than_requested_is_refused(
    model, trained_small_net, tmp_path
):
    _, _, data = trained_small_net
    out = tmp_path / "m8.tflite"
    with pytest.raises(
        ExportError,
        match=r"^int8 calibration asks for 200 training images \(--calibration_images\) but "
        r"the data has 50; pass --calibration_images=50 or less, or data with more training "
        r"images \(a larger --train_limit\)$",
    ):
        exporting.export_tflite(
            model, out, "int8", data.test_images[:20],
            calibration_images=data.train_images[:50], calibration_requested=200,
            log=lambda s: None,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "empty", "truncated_weights"])
def test_a_corrupt_model_file_is_refused_naming_it(trained_small_net, tmp_path, damage):
    content = _model_path(trained_small_net).read_bytes()
    bad = tmp_path / "model.keras"
    if damage == "truncated":
        bad.write_bytes(content[: len(content) // 2])
    elif damage == "empty":
        bad.write_bytes(b"")
    else:  # a whole zip whose weights file is cut short
        with (
            zipfile.ZipFile(_model_path(trained_small_net)) as src,
            zipfile.ZipFile(bad, "w") as dst,
        ):
            for name in src.namelist():
                data = src.read(name)
                dst.writestr(name, data[: len(data) // 2] if name.endswith(".h5") else data)
    with pytest.raises(
        ExportError,
        match=f"^{bad}: cannot load the model, the file is truncated or corrupt \\(.+\\); "
        "re-run densenas-train to write it again$",
    ) as caught:
        exporting.load_trained_model(bad)
    assert "\n" not in str(caught.value)
    if damage != "truncated_weights":
        assert "(not a zip archive)" in str(caught.value)


# ----- the latency tables' converter ---------------------------------------------------------
def test_latency_tables_time_the_exporters_float_conversion(monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    from densenas_tf.latency.table import op_key

    calls = []
    convert = exporting.convert_tflite

    def recording(model, quantization, *args):
        calls.append((model, quantization))
        return convert(model, quantization, *args)

    monkeypatch.setattr(exporting, "convert_tflite", recording)
    piece = latency_measure.overhead_model(batch_size=2)
    entry = latency_measure.measure(piece, "tflite", threads=1, warmup=1, runs=3)
    assert calls == [(piece, "none")] and entry.count == 3
    # 'none': float32 in and out, unquantised, the piece's fixed batch size kept.
    model = latency_measure.build_piece_model(op_key("mbconv_k3_e3", 8, 8, 1, 16), batch_size=2)
    content = convert(model, "none")
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert (inp["dtype"], out["dtype"]) == (np.float32, np.float32)
    assert inp["quantization"] == (0.0, 0) and out["quantization"] == (0.0, 0)
    assert list(inp["shape"]) == [int(d) for d in model.inputs[0].shape]
    x = np.random.default_rng(0).uniform(-1, 1, inp["shape"]).astype(np.float32)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    np.testing.assert_allclose(
        interpreter.get_tensor(out["index"]), model(x, training=False).numpy(), atol=1e-5
    )
