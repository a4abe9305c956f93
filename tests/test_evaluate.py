"""Evaluating exported models (densenas_tf.evaluation) and tools/evaluate.py: the
counts against Keras's own on the same images, versions, int8, the report files."""

import json

import numpy as np
import pytest
from helpers import run_tool

from densenas_tf.data.idx import FASHION_MNIST_CLASSES
from densenas_tf.evaluation.evaluate import (
    EvaluationError,
    eval_batches,
    evaluate,
    find_saved_model,
    open_model,
    tflite_latency,
)
from densenas_tf.exporting.export import export_serving, export_tflite

# Tests that train a net (trained_small_net) are in the slow tier (conftest.SLOW_FIXTURES).
COUNT = 300


@pytest.fixture(scope="module")
def exports(trained_small_net, tmp_path_factory):
    """The trained small net exported twice to a model base path, and as float
    and int8 .tflite files; with the Keras model and its test data."""
    import keras

    run_dir, _, data = trained_small_net
    model = keras.models.load_model(run_dir / "model.keras")
    out = tmp_path_factory.mktemp("exports")
    quiet = lambda line: None  # noqa: E731
    check = data.test_images[:50]
    for _ in range(2):
        export_serving(model, out / "base", check, class_names=FASHION_MNIST_CLASSES, log=quiet)
    export_tflite(model, out / "float.tflite", "none", check, log=quiet)
    export_tflite(
        model,
        out / "int8.tflite",
        "int8",
        data.test_images[:1000],  # as tests/test_export.py checks int8
        data.test_labels[:1000],
        calibration_images=data.train_images[:200],
        log=quiet,
    )
    return out, model, data


def _keras_figures(model, images, labels):
    """Top-1, top-5, per-class accuracy and confusion matrix from Keras's own logits."""
    logits = np.concatenate(
        [
            model(images[i : i + 100].astype(np.float32), training=False)
            for i in range(0, len(images), 100)
        ]
    )
    predicted = logits.argmax(-1)
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    confusion = np.zeros((10, 10), int)
    for true, guess in zip(labels, predicted):
        confusion[true, guess] += 1
    per_class = [confusion[c, c] / confusion[c].sum() for c in range(10)]
    top1 = float(np.mean(predicted == labels))
    return top1, float(np.mean((top5 == labels[:, None]).any(-1))), per_class, confusion


@pytest.mark.parametrize("which", ["base", "float.tflite"])
def test_savedmodel_and_float_tflite_score_as_keras_does(exports, which):
    out, model, data = exports
    images, labels = data.test_images[:COUNT], data.test_labels[:COUNT]
    exported = open_model(out / which)
    result = evaluate(exported, eval_batches(data, 64, COUNT), FASHION_MNIST_CLASSES)
    top1, top5, per_class, confusion = _keras_figures(model, images, labels)
    assert result["images"] == COUNT
    # Logits agree to 1e-4: the same argmax but for a near tie (within one image).
    assert abs(result["top1_accuracy"] - top1) <= 1 / COUNT
    assert abs(result["top5_accuracy"] - top5) <= 1 / COUNT
    assert np.abs(np.asarray(result["confusion_matrix"]) - confusion).sum() <= 2
    got = [result["per_class"][name]["accuracy"] for name in FASHION_MNIST_CLASSES]
    np.testing.assert_allclose(got, per_class, atol=1 / min(np.bincount(labels)))
    assert sum(e["images"] for e in result["per_class"].values()) == COUNT
    assert result["top1_accuracy"] > 0.5  # a trained net, not chance
    if which == "base":  # the newest version, with its class names from the signature
        assert exported.path == out / "base" / "2" and exported.kind == "saved_model"
        assert exported.class_names == FASHION_MNIST_CLASSES
    else:
        assert exported.input_shape == (28, 28, 1) and exported.num_classes == 10


def test_int8_tflite_quantizes_its_input_and_stays_near_keras(exports):
    out, model, data = exports
    exported = open_model(out / "int8.tflite")
    assert exported.description["input_dtype"] == "uint8"
    result = evaluate(exported, eval_batches(data, 100, COUNT), FASHION_MNIST_CLASSES)
    top1, _, _, _ = _keras_figures(model, data.test_images[:COUNT], data.test_labels[:COUNT])
    assert abs(result["top1_accuracy"] - top1) <= 0.03
    latency = tflite_latency(exported.content, data.test_images[0], runs=5, warmup=1)
    assert latency["runs"] == 5 and latency["threads"] == 1 and latency["batch_size"] == 1
    assert 0 < latency["median_ms"] < 1000


def test_versions_and_bad_model_paths(exports, tmp_path):
    out, _, data = exports
    assert find_saved_model(out / "base") == out / "base" / "2"
    assert find_saved_model(out / "base", 1) == out / "base" / "1"
    assert find_saved_model(out / "base" / "1") == out / "base" / "1"
    with pytest.raises(EvaluationError, match=r"has no version 3; its versions are \[1, 2\]"):
        find_saved_model(out / "base", 3)
    with pytest.raises(EvaluationError, match="does not exist; pass a SavedModel"):
        open_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="holds no SavedModel"):
        open_model(tmp_path / "empty")
    (tmp_path / "model.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(EvaluationError, match=r"is no \.tflite file"):
        open_model(tmp_path / "model.tflite")
    with pytest.raises(EvaluationError, match="--version applies to a model base path only"):
        open_model(out / "float.tflite", 1)
    # A model of 10 classes on data of 3: refused before counting.
    from densenas_tf.data.sources import ImageData

    few = ImageData(
        "three", data.test_images[:6], np.arange(6, dtype=np.int32) % 3,
        data.test_images[:6], np.arange(6, dtype=np.int32) % 3, ("a", "b", "c"),
    )  # fmt: skip
    with pytest.raises(EvaluationError, match="gives 10 classes but the data have 3"):
        evaluate(open_model(out / "base"), eval_batches(few), few.class_names)
    with pytest.raises(EvaluationError, match="has 10 classes but the data have 3"):
        evaluate(open_model(out / "float.tflite"), eval_batches(few), few.class_names)


def test_the_binary_reports_accuracy_latency_and_writes_its_files(exports, tmp_path):
    from densenas_tf.data.sources import load_image_data

    out, model, _ = exports
    fashion = load_image_data("fashion_mnist")  # the binary's default: the first test images
    images, labels = fashion.test_images[:200], fashion.test_labels[:200]
    top1, top5, _, confusion = _keras_figures(model, images, labels)
    result = run_tool(
        "evaluate",
        f"--model={out / 'float.tflite'}",
        "--limit=200",
        "--latency_runs=5",
        f"--out_dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["accuracy"]["images"] == 200
    assert abs(report["accuracy"]["top1_accuracy"] - top1) <= 1 / 200
    assert abs(report["accuracy"]["top5_accuracy"] - top5) <= 1 / 200
    assert np.abs(np.asarray(report["accuracy"]["confusion_matrix"]) - confusion).sum() <= 2
    assert report["latency"]["runs"] == 5 and report["latency"]["median_ms"] > 0
    png = (tmp_path / "eval" / "confusion_matrix.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    lines = result.stdout.splitlines()
    assert (
        lines[0] == f"tflite {out / 'float.tflite'}: 200 test images of fashion_mnist (10 classes)"
    )
    assert lines[1] == (
        f"top-1 accuracy {report['accuracy']['top1_accuracy']:.4f}, "
        f"top-5 accuracy {report['accuracy']['top5_accuracy']:.4f}"
    )
    assert lines[2].startswith("per class: T-shirt/top ")
    assert lines[3].startswith("latency ") and "median of 5 runs, 1 thread, batch 1" in lines[3]
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "confusion_matrix.png",
        "report.json",
    ]
    # A model base path, version 1: the same accuracy; latency is said to be TFLite's only.
    result = run_tool("evaluate", f"--model={out / 'base'}", "--version=1", "--limit=200")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"saved_model {out / 'base' / '1'}: 200 test images" in result.stdout
    assert f"top-1 accuracy {report['accuracy']['top1_accuracy']:.4f}" in result.stdout
    assert "latency: measured on .tflite files only" in result.stdout
    missing = run_tool("evaluate", f"--model={tmp_path / 'none.tflite'}")
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {tmp_path / 'none.tflite'} does not exist")
    )
