"""Your own images, end to end through the binaries (docs/own_images.md): a folder
of real Fashion-MNIST images saved as 20x20 colour PNGs in 5 classes -> a space
made for it -> search -> derive -> retrain -> export to TFLite -> evaluate.

Tiny settings throughout (a few steps of each); the latency table is made up
here (helpers.made_up_table) instead of measured, which would take minutes."""

import json

import numpy as np
import pytest
from helpers import made_up_table, run_python, run_tool

from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import load_space

pytestmark = pytest.mark.slow

CLASSES = {0: "tshirt", 1: "trouser", 5: "sandal", 7: "sneaker", 8: "bag"}
PER_CLASS = 24
SIZE = 20


def _write_folder(root):
    """PER_CLASS real Fashion-MNIST test images of each of 5 classes, as RGB PNGs of SIZE."""
    import tensorflow as tf

    from densenas_tf.data.sources import load_image_data

    data = load_image_data("fashion_mnist", train_limit=1)
    for label, name in CLASSES.items():
        for i, image in enumerate(data.test_images[data.test_labels == label][:PER_CLASS]):
            small = tf.image.resize(image, (SIZE, SIZE), method="area").numpy()
            rgb = np.repeat(np.round(small).astype(np.uint8), 3, axis=-1)
            path = root / name / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_png(rgb).numpy())
    return root


def _ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_own_images_from_a_folder_to_an_evaluated_tflite(tmp_path):
    folder = _write_folder(tmp_path / "my_images")
    space_file, table_file = tmp_path / "my_space.yaml", tmp_path / "my_table.json"
    out = _ok(
        run_tool("make_space", "--like=tiny", f"--image_folder={folder}", f"--out={space_file}")
    )
    assert out.startswith(f"wrote {space_file}: space 'my_space', 20x20x3 images, 5 classes")
    space = load_space(space_file)
    assert space.input_shape == (20, 20, 3) and space.num_classes == 5
    made_up_table(space, lambda k, key: 0.01 + 0.002 * (k % 5)).save(table_file)

    search = tmp_path / "runs" / "my_search"
    out = _ok(
        run_tool(
            "search",
            f"--run_dir={search}",
            f"--override=space={space_file}",
            f"--latency_table={table_file}",
            f"--image_folder={folder}",
            "--override=epochs=2",
            "--override=warmup_epochs=1",
            "--override=batch_size=16",
            "--override=latency_check=false",
            "--override=graph_steps=false",
            "--override=deterministic=false",
        )
    )
    searched = ArchSpec.from_json((search / "arch.json").read_text())
    assert searched.input_shape == (20, 20, 3) and searched.num_classes == 5
    assert f"derived: {searched.to_block_string()}" in out

    arch_file = tmp_path / "my_arch.json"
    _ok(run_tool("derive", f"--run_dir={search}", f"--out={arch_file}"))
    derived = ArchSpec.from_json(arch_file.read_text())
    assert derived.same_architecture(searched)

    train = tmp_path / "runs" / "my_train"
    out = _ok(
        run_tool(
            "train",
            f"--arch={arch_file}",
            f"--run_dir={train}",
            f"--image_folder={folder}",
            "--epochs=1",
            "--batch_size=16",
        )
    )
    metrics = json.loads((train / "metrics.json").read_text())
    assert metrics["test_images"] == 25  # a fifth of each class's 24, rounded: 5 x 5
    assert f"test accuracy {metrics['test_accuracy']:.4f} (25 images)" in out

    model_file = tmp_path / "my_model.tflite"
    out = _ok(
        run_python(
            "export/export_tflite.py", f"--model={train / 'model.keras'}", f"--out={model_file}"
        )
    )
    assert model_file.is_file() and "top-1 agreement 100.00%" in out

    eval_dir = tmp_path / "runs" / "my_eval"
    out = _ok(
        run_tool(
            "evaluate",
            f"--model={model_file}",
            f"--image_folder={folder}",
            f"--out_dir={eval_dir}",
            "--latency_runs=5",
        )
    )
    report = json.loads((eval_dir / "report.json").read_text())
    accuracy = report["accuracy"]
    # The same 25 held-out images the training tested on, and the same answers
    # (the float TFLite file's logits agree with Keras's to 1e-6).
    assert accuracy["images"] == 25
    assert abs(accuracy["top1_accuracy"] - metrics["test_accuracy"]) <= 1 / 25
    assert accuracy["class_names"] == sorted(CLASSES.values())
    assert [e["images"] for e in accuracy["per_class"].values()] == [5] * 5
    assert f"tflite {model_file}: 25 test images of my_images (5 classes)" in out
    assert "latency " in out and (eval_dir / "confusion_matrix.png").is_file()
