"""Export: SavedModel signatures and numerics, float and int8 TFLite against Keras,
failed checks that leave nothing behind, and clear errors at the serving signature."""

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from densenas_tf import exporting
from densenas_tf.exporting import ExportCheckError, TFLiteRunner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model(trained_small_net):
    run_dir, _, _ = trained_small_net
    return keras.models.load_model(run_dir / "model.keras")


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


def _builtin_only(path: Path) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    names = {op["op_name"] for op in interpreter._get_ops_details()}
    return bool(names) and not any(n.startswith("Flex") or n == "CUSTOM" for n in names)


def test_float_tflite_matches_keras_within_1e_4(model, trained_small_net, tmp_path):
    _, _, data = trained_small_net
    images, labels = data.test_images[:500], data.test_labels[:500]
    result = exporting.export_tflite(
        model, tmp_path / "m.tflite", "none", images, labels, log=lambda s: None
    )
    assert result["max_abs_diff_logits"] <= 1e-4 and result["input_dtype"] == "float32"
    assert _builtin_only(tmp_path / "m.tflite")
    logits = TFLiteRunner((tmp_path / "m.tflite").read_bytes())(images)
    np.testing.assert_allclose(logits, keras_logits := model(images.astype(np.float32)), atol=1e-4)
    assert logits.shape == tuple(keras_logits.shape)


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
    assert result["size_bytes"] < (tmp_path / "m8.tflite").stat().st_size * 1.01


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


def test_export_binaries(trained_small_net, tmp_path):
    run_dir, _, _ = trained_small_net
    out = tmp_path / "saved"
    ok = subprocess.run(
        [
            sys.executable,
            str(ROOT / "export" / "export_saved_model.py"),
            f"--model={run_dir / 'model.keras'}",
            f"--out={out}",
            "--check_images=50",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert "max |logits - Keras|" in ok.stdout and (out / "saved_model.pb").is_file()
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "export" / "export_tflite.py"),
            f"--model={tmp_path / 'missing.keras'}",
            f"--out={tmp_path / 'x.tflite'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and "not a .keras model file" in bad.stderr
    assert not (tmp_path / "x.tflite").exists()
