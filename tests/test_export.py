"""Export: SavedModel signatures and numerics, float, fp16 and int8 TFLite against
Keras, failed checks that leave nothing behind, output paths never deleted unless
ours, refused inputs (image size, no images, corrupt model), clear errors at the
serving signature, and the latency tables' converter being the exporter's.
(The binaries are run in test_export_tools.py.)"""

import json
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from densenas_tf.exporting import export as exporting
from densenas_tf.exporting.export import ExportCheckError, ExportError, TFLiteRunner
from densenas_tf.latency import measure as latency_measure

# The fp16 file's largest logit error against Keras allowed: float16 keeps 11
# significant bits, so each weight moves by up to 2**-11 of itself (5e-4), which
# the small net's logits (up to about 7) carry as errors of about 1e-2 (1.2e-2
# measured). Weights in int8 instead (dynamic-range quantisation): 6.5e-2.
FP16_ATOL = 0.03


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
    assert sorted(out) == ["logits", "probabilities"]
    reference = model(images.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), reference, atol=1e-4)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    as_float = loaded.signatures["serving_float"](image=tf.constant(images.astype(np.float32)))
    np.testing.assert_allclose(as_float["logits"].numpy(), out["logits"].numpy(), atol=1e-5)


def test_serving_signature_refuses_an_image_of_the_wrong_shape(model, tmp_path, trained_small_net):
    _, _, data = trained_small_net
    exporting.export_saved_model(model, tmp_path / "sm", data.test_images[:20], log=lambda s: None)
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
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


def test_serving_an_empty_batch_returns_empty_outputs(model, tmp_path, trained_small_net):
    _, _, data = trained_small_net
    exporting.export_saved_model(model, tmp_path / "sm", data.test_images[:20], log=lambda s: None)
    signatures = tf.saved_model.load(str(tmp_path / "sm")).signatures
    for name, dtype in (("serving_default", tf.uint8), ("serving_float", tf.float32)):
        out = signatures[name](image=tf.zeros([0, 28, 28, 1], dtype))
        assert {k: (tuple(v.shape), v.dtype) for k, v in out.items()} == {
            "logits": ((0, 10), tf.float32),
            "probabilities": ((0, 10), tf.float32),
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
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


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
        "re-run tools/train.py to write it again$",
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
