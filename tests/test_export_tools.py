"""The export binaries: each on its success path (exit 0, an export that reloads;
the SavedModel in TensorFlow Serving's BASE/<version>/ layout, a re-export
adding a version, the deprecated --out still writing one directory) and on a
failed check (exit 2, nothing at the output), and their refusals (exit 1, one
line naming the fix): bad flags, an existing version, an output they would
have to delete, a missing model, data of another image size, too few images
to calibrate int8."""

import hashlib
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
FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

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


def _tree(path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def model_path(trained_small_net):
    return trained_small_net[0] / "model.keras"


@pytest.fixture(scope="module")
def model(model_path):
    return keras.models.load_model(model_path)


def test_saved_model_binary_writes_versions_for_tensorflow_serving(model_path, model, tmp_path):
    base = tmp_path / "serving"
    result = run_python(
        SAVED_MODEL, f"--model={model_path}", f"--out_dir={base}", "--check_images=50"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"SavedModel {base / '1'}: " in result.stdout and "over 50 images" in result.stdout
    assert "10 warm-up requests" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"version 1 of {base}; serve it with: tensorflow_model_server "
        f"--model_base_path={base} --model_name=densenas --rest_api_port=8501"
    )
    version = base / "1"
    assert (version / "saved_model.pb").is_file() and (version / EXPORT_MARKER).is_file()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    # The training run's data is Fashion-MNIST: its class names are served.
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    served = tf.saved_model.load(str(version)).signatures["serving_default"](
        image=tf.constant(images)
    )
    reference = model(images.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(served["logits"].numpy(), reference, atol=1e-4)
    assert [c.decode() for c in served["classes"].numpy()] == [
        FASHION_NAMES[i] for i in served["logits"].numpy().argmax(-1)
    ]
    assert served["class_names"].numpy()[0].astype(str).tolist() == FASHION_NAMES

    # Again: version 2, version 1 unchanged; an existing version is refused.
    first = _tree(version)
    again = run_python(
        SAVED_MODEL, f"--model={model_path}", f"--out_dir={base}", "--check_images=20",
        "--warmup_requests=0",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"SavedModel {base / '2'}: " in again.stdout and "0 warm-up requests" in again.stdout
    assert not (base / "2" / "assets.extra").exists()
    assert _tree(version) == first
    refused = run_python(SAVED_MODEL, f"--model={model_path}", f"--out_dir={base}", "--version=1")
    assert refused.returncode == 1
    assert _error_line(refused) == (
        f"error: {version} exists: version 1 is already exported and is never replaced; pass "
        "another --version, or none to write the next one (3)"
    )
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"] and _tree(version) == first


def test_the_deprecated_out_still_writes_one_saved_model_directory(model_path, tmp_path):
    out = tmp_path / "saved"
    result = run_python(SAVED_MODEL, f"--model={model_path}", f"--out={out}", "--check_images=20")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: --out is deprecated; it writes one SavedModel directory, not TensorFlow "
        "Serving's layout: use --out_dir=BASE (the export goes to BASE/<version>/)"
    ]
    assert (out / "saved_model.pb").is_file() and (out / EXPORT_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--out_dir=base", "--out=saved"],
            "error: --out (deprecated: one SavedModel directory) cannot go with --out_dir or "
            "--version; give --out_dir (and --version) only",
        ),
        (
            [],
            "error: no output: pass --out_dir=BASE, the model base path TensorFlow Serving "
            "reads (the export goes to BASE/<version>/)",
        ),
    ],
    ids=["out_and_out_dir", "no_output"],
)
def test_saved_model_output_flags_are_refused_unless_one(flags, message, tmp_path):
    result = run_python(SAVED_MODEL, "--model=model.keras", *flags, cwd=tmp_path)
    assert result.returncode == 1 and _error_line(result) == message
    assert list(tmp_path.iterdir()) == []


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
    if script == SAVED_MODEL:
        base = tmp_path / "out" / "serving"
        out, flag = base / "1", f"--out_dir={base}"
    else:
        base = out = tmp_path / "out" / "m.tflite"
        flag = f"--out={out}"
    result = run_python(
        script, f"--model={model_path}", flag, "--check_images=20", before=FAIL_THE_CHECK
    )
    assert result.returncode == 2, result.stderr[-3000:]
    line = _error_line(result)
    assert " check failed: " in line and line.endswith(f"nothing was written to {out}")
    assert not base.exists() and list(base.parent.iterdir()) == []


@pytest.mark.parametrize("script", [SAVED_MODEL, TFLITE], ids=["saved_model", "tflite"])
@pytest.mark.parametrize("count", ["0", "-3"])
def test_check_images_below_one_is_refused_naming_the_flag(script, count, tmp_path):
    out = tmp_path / "out"  # refused when the flags are read, before the model is looked at
    flag = f"--out_dir={out}" if script == SAVED_MODEL else f"--out={out}"
    result = run_python(script, "--model=model.keras", flag, f"--check_images={count}")
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
    notes = theirs / "notes.txt"
    result = run_python(SAVED_MODEL, f"--model={model_path}", f"--out_dir={notes}")
    assert result.returncode == 1
    assert _error_line(result) == (
        f"error: {notes} exists and is not a directory; --out_dir is the model base path, the "
        "directory that holds one directory per version: pass a directory path"
    )
    result = run_python(TFLITE, f"--model={model_path}", f"--out={theirs}")
    assert result.returncode == 1
    assert _error_line(result) == (
        f"error: {theirs} is a directory; a TFLite export is one file: pass a file path as "
        f"--out, e.g. {theirs / 'model.tflite'}"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["theirs"]
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    assert notes.read_text() == "keep me"


@pytest.mark.parametrize("script", [SAVED_MODEL, TFLITE], ids=["saved_model", "tflite"])
def test_a_missing_model_is_named_as_missing(script, tmp_path):
    missing = tmp_path / "missing.keras"
    flag = f"--out_dir={tmp_path / 'x'}" if script == SAVED_MODEL else f"--out={tmp_path / 'x'}"
    result = run_python(script, f"--model={missing}", flag)
    assert result.returncode == 1
    assert _error_line(result) == (
        f"error: {missing} does not exist; pass the model.keras written by densenas-train (--model)"
    )
    assert list(tmp_path.iterdir()) == []


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


def test_int8_on_fewer_training_images_than_calibration_images_is_refused(model_path, tmp_path):
    out = tmp_path / "m8.tflite"
    result = run_python(
        TFLITE, f"--model={model_path}", f"--out={out}", "--quantization=int8",
        "--train_limit=60", "--test_limit=50",
    )  # fmt: skip
    assert result.returncode == 1
    assert _error_line(result) == (
        "error: int8 calibration asks for 200 training images (--calibration_images) but the "
        "data has 60; pass --calibration_images=60 or less, or data with more training images "
        "(a larger --train_limit)"
    )
    assert list(tmp_path.iterdir()) == []
