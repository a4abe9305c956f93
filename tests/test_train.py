"""Retraining a derived net: accuracy above chance, resume, refusals, the binary."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_FASHION_NET

from densenas_tf.arch_spec import ArchSpec
from densenas_tf.data import load_image_data
from densenas_tf.train import TrainConfig, TrainError, evaluate, train

ROOT = Path(__file__).resolve().parent.parent


def test_short_retraining_is_clearly_above_chance(trained_small_net):
    run_dir, metrics, data = trained_small_net
    assert metrics["test_accuracy"] > 0.6  # chance is 0.1 on ten balanced classes
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["lr"] < history[0]["lr"]  # cosine decay per step
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert saved["params"] > 0 and saved["mult_adds"] > 0
    import keras

    model = keras.models.load_model(run_dir / "model.keras")
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    # The saved model reproduces the reported accuracy on the same test images.
    assert evaluate(model, data.test_images, data.test_labels) == pytest.approx(
        metrics["test_accuracy"], abs=1e-9
    )
    assert any((run_dir / "tensorboard").iterdir())


def test_a_finished_run_reports_its_metrics_and_another_config_is_refused(trained_small_net):
    run_dir, metrics, data = trained_small_net
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    source = {"dataset": "fashion_mnist", "train_limit": 4000, "test_limit": 1000}
    again = train(
        spec,
        data,
        run_dir,
        TrainConfig(epochs=3, batch_size=64),
        data_source=source,
        log=lambda s: None,
    )
    assert again == metrics
    with pytest.raises(TrainError, match="another architecture, config or data"):
        train(
            spec,
            data,
            run_dir,
            TrainConfig(epochs=4, batch_size=64),
            data_source=source,
            log=lambda s: None,
        )


def test_an_interrupted_run_resumes_after_its_last_epoch(tmp_path):
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    source = {"dataset": "fashion_mnist", "train_limit": 640, "test_limit": 200}
    data = load_image_data(**source)
    config = TrainConfig(epochs=2, batch_size=64)

    class StopError(Exception):
        pass

    def stop_after_first_epoch(line):
        if line.startswith("epoch 1/2"):
            raise StopError

    with pytest.raises(StopError):
        train(spec, data, tmp_path / "run", config, data_source=source, log=stop_after_first_epoch)
    progress = json.loads((tmp_path / "run" / "ckpt" / "progress.json").read_text())
    assert progress["epochs_done"] == 1 and not (tmp_path / "run" / "metrics.json").exists()
    lines = []
    metrics = train(spec, data, tmp_path / "run", config, data_source=source, log=lines.append)
    assert any(line.startswith("resuming") for line in lines)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][0] == progress["history"][0]


def test_arch_and_data_that_disagree_are_refused(tmp_path):
    data = load_image_data("fashion_mnist", train_limit=64, test_limit=64)
    wrong_size = ArchSpec.from_block_string(SMALL_FASHION_NET.replace("28x28x1", "32x32x1"))
    with pytest.raises(TrainError, match=r"32x32x1.*28x28x1"):
        train(wrong_size, data, tmp_path / "a", TrainConfig(epochs=1), log=lambda s: None)
    wrong_classes = ArchSpec.from_block_string(SMALL_FASHION_NET.replace("classes:10", "classes:5"))
    with pytest.raises(TrainError, match="5 classes"):
        train(wrong_classes, data, tmp_path / "b", TrainConfig(epochs=1), log=lambda s: None)
    with pytest.raises(TrainError, match="lr must be positive"):
        TrainConfig(lr=0.0)


def test_train_binary_names_an_unknown_op(tmp_path):
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET).to_dict()
    spec["blocks"][0]["head_op"] = "mbconv_k9_e6"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec))
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "train.py"),
            f"--arch={bad}",
            f"--run_dir={tmp_path / 'r'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "error:" in result.stderr and "mbconv_k9_e6" in result.stderr
    assert not (tmp_path / "r").exists()
