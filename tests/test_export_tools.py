"""The export binaries: each on its success path (exit 0, an export that reloads)
and on a failed check (exit 2, nothing at --out), and their refusals (exit 1,
one line naming the fix): bad flags, an --out they would have to delete, a
missing model, data of another image size."""

import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, run_python

from densenas_tf.exporting.export import EXPORT_MARKER, TFLiteRunner

# Each test runs an export binary in a fresh process: the slow tier only.
pytestmark = pytest.mark.slow

SAVED_MODEL = ROOT / "export" / "export_saved_model.py"
TFLITE = ROOT / "export" / "export_tflite.py"

# Run before a binary, in its process: the Keras reference the checks compare
# against is shifted by 1, so every check fails (there is no flag for that).
FAIL_THE_CHECK = """
from densenas_tf.exporting import export as exporting
keras_logits = exporting.keras_logits
exporting.keras_logits = lambda *args, **kwargs: keras_logits(*args, **kwargs) + 1.0
"""


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``error: ...`` line of a refused run."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def model_path(trained_small_net):
    return trained_small_net[0] / "model.keras"


@pytest.fixture(scope="module")
def model(model_path):
    return keras.models.load_model(model_path)


def test_saved_model_binary_exports_a_model_that_reloads(model_path, model, tmp_path):
    out = tmp_path / "saved"
    result = run_python(SAVED_MODEL, f"--model={model_path}", f"--out={out}", "--check_images=50")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max |logits - Keras|" in result.stdout and "over 50 images" in result.stdout
    assert (out / "saved_model.pb").is_file() and (out / EXPORT_MARKER).is_file()
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    served = tf.saved_model.load(str(out)).signatures["serving_default"](image=tf.constant(images))
    reference = model(images.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(served["logits"].numpy(), reference, atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]


def test_tflite_binary_exports_a_model_that_reloads(model_path, model, trained_small_net, tmp_path):
    _, _, data = trained_small_net
    out = tmp_path / "sub" / "m.tflite"
    result = run_python(TFLITE, f"--model={model_path}", f"--out={out}", "--check_images=100")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"TFLite {out} (none, " in result.stdout and "over 100 images" in result.stdout
    images = data.test_images[:100]
    logits = TFLiteRunner(out.read_bytes())(images)
    reference = model(images.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(logits, reference, atol=1e-4)
    assert [p.name for p in out.parent.iterdir()] == ["m.tflite"]


@pytest.mark.parametrize("script", [SAVED_MODEL, TFLITE], ids=["saved_model", "tflite"])
def test_a_failed_check_exits_2_and_leaves_nothing(script, model_path, tmp_path):
    out = tmp_path / "out" / ("saved" if script == SAVED_MODEL else "m.tflite")
    result = run_python(
        script, f"--model={model_path}", f"--out={out}", "--check_images=20", before=FAIL_THE_CHECK
    )
    assert result.returncode == 2, result.stderr[-3000:]
    line = _error_line(result)
    assert " check failed: " in line and line.endswith(f"nothing was written to {out}")
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.parametrize("script", [SAVED_MODEL, TFLITE], ids=["saved_model", "tflite"])
@pytest.mark.parametrize("count", ["0", "-3"])
def test_check_images_below_one_is_refused_naming_the_flag(script, count, tmp_path):
    out = tmp_path / "out"  # refused when the flags are read, before the model is looked at
    result = run_python(script, "--model=model.keras", f"--out={out}", f"--check_images={count}")
    assert result.returncode == 1
    assert f"flag --check_images={count}: {count} is not a positive integer" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_an_out_the_binaries_would_delete_is_refused_and_left_alone(model_path, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    result = run_python(SAVED_MODEL, f"--model={model_path}", f"--out={theirs}")
    assert result.returncode == 1
    assert _error_line(result) == (
        f"error: {theirs} is a non-empty directory that is not a SavedModel written by this "
        f"exporter (it has no {EXPORT_MARKER} or holds other files); it is left alone: pass a "
        "new or empty directory as --out"
    )
    result = run_python(TFLITE, f"--model={model_path}", f"--out={theirs}")
    assert result.returncode == 1
    assert _error_line(result) == (
        f"error: {theirs} is a directory; a TFLite export is one file: pass a file path as "
        f"--out, e.g. {theirs / 'model.tflite'}"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["theirs"]
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    assert (theirs / "notes.txt").read_text() == "keep me"


def test_a_missing_model_is_refused(tmp_path):
    result = run_python(
        TFLITE, f"--model={tmp_path / 'missing.keras'}", f"--out={tmp_path / 'x.tflite'}"
    )
    assert result.returncode == 1 and "not a .keras model file" in _error_line(result)
    assert not (tmp_path / "x.tflite").exists()


def test_data_of_another_image_size_is_refused_naming_both_shapes(model_path, tmp_path):
    out = tmp_path / "m.tflite"
    result = run_python(
        TFLITE,
        f"--model={model_path}",
        f"--out={out}",
        "--image_size=32",
        "--train_limit=50",
        "--test_limit=50",
    )
    assert result.returncode == 1
    assert _error_line(result) == (
        "error: the check images are 32x32x1 (height x width x channels) but the model takes "
        "28x28x1; pass the data the model was trained on (the data flags, e.g. "
        "--image_size=28, or none to use the training run's data)"
    )
    assert list(tmp_path.iterdir()) == []
