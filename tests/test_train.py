"""Retraining a derived net: accuracy above chance, resume, refusals, the binary."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_FASHION_NET, read_events

from densenas_tf.core import checkpoints
from densenas_tf.core import run_dir as run_dirs
from densenas_tf.core.run_dir import RunDirError
from densenas_tf.data.sources import load_image_data
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.train.trainer import TrainConfig, TrainError, evaluate, train

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


def test_training_tensorboard_holds_step_and_epoch_figures_the_net_and_its_config(
    trained_small_net,
):
    from densenas_tf.core.summaries import TAGS
    from densenas_tf.train.trainer import SUMMARY_EVERY_STEPS

    run_dir, metrics, _ = trained_small_net
    scalars, meta = read_events(run_dir / "tensorboard")
    for tag, (description, *_) in meta.items():
        assert description == TAGS[tag], tag
    steps_per_epoch, total = 4000 // 64, 3 * (4000 // 64)  # 62 steps, 186 in all
    logged = list(range(SUMMARY_EVERY_STEPS, total + 1, SUMMARY_EVERY_STEPS))
    for tag in ("train/loss", "train/accuracy", "train/learning_rate"):
        assert sorted(scalars[tag]) == logged, tag
    # The cosine schedule written out: 0.1 to 1e-4 over 186 steps, at the step's iteration.
    cosine = [
        0.1 * (1e-3 + (1 - 1e-3) * 0.5 * (1 + np.cos(np.pi * (s - 1) / total))) for s in logged
    ]
    np.testing.assert_allclose(
        [scalars["train/learning_rate"][s] for s in logged], cosine, rtol=1e-5
    )
    # Each batch's own figures: a loss in nats and an accuracy among k/64.
    for s in logged:
        assert 0.0 < scalars["train/loss"][s] < 5.0
        hits = scalars["train/accuracy"][s] * 64
        assert abs(hits - round(hits)) < 1e-3, (s, hits)
    for epoch, entry in enumerate(metrics["history"], start=1):
        step = epoch * steps_per_epoch
        assert scalars["train/epoch_loss"][step] == pytest.approx(entry["loss"], rel=1e-6)
        assert scalars["train/epoch_accuracy"][step] == pytest.approx(entry["train_acc"], rel=1e-6)
    assert scalars["test/accuracy"][total] == pytest.approx(metrics["test_accuracy"], rel=1e-6)
    (architecture,) = meta["train/architecture"][2]
    assert metrics["block_string"] in architecture and "| block | channels |" in architecture
    (config,) = meta["train/config"][2]
    assert "| batch_size | `64` |" in config and "| epochs | `3` |" in config


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
    progress = json.loads((tmp_path / "run" / "ckpt" / "epoch_001.json").read_text())
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


# ----- resume, run directories, refusals -----------------------------------------------


def _train_command(arch_file, run_dir, *extra):
    return [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        f"--arch={arch_file}",
        f"--run_dir={run_dir}",
        "--epochs=3",
        "--batch_size=32",
        "--train_limit=640",
        "--test_limit=200",
        "--seed=5",
        *extra,
    ]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def test_a_killed_training_resumes_to_the_uninterrupted_weights_step_and_lr(tmp_path):
    arch_file = tmp_path / "small.json"
    ArchSpec.from_block_string(SMALL_FASHION_NET, name="small").save(arch_file)
    # Exact without it on this CPU too; it keeps kernels that reduce in parallel exact.
    env = _env(TF_DETERMINISTIC_OPS="1")
    straight = tmp_path / "straight"
    subprocess.run(
        _train_command(arch_file, straight), check=True, capture_output=True, timeout=600, env=env
    )
    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        _train_command(arch_file, resumed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (resumed / "ckpt" / "epoch_001.json").is_file():
            break
        time.sleep(0.05)
    assert process.poll() is None, "the training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "metrics.json").exists()
    result = subprocess.run(
        _train_command(arch_file, resumed), capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"resuming .* after epoch [12]\b", result.stderr), result.stderr[-3000:]

    import keras

    a = keras.models.load_model(straight / "model.keras")
    b = keras.models.load_model(resumed / "model.keras")
    assert int(a.optimizer.iterations) == int(b.optimizer.iterations) == 3 * 640 // 32
    assert float(a.optimizer.learning_rate) == float(b.optimizer.learning_rate)
    for x, y in zip(
        a.get_weights() + a.optimizer.variables, b.get_weights() + b.optimizer.variables
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    metrics_a = json.loads((straight / "metrics.json").read_text())
    metrics_b = json.loads((resumed / "metrics.json").read_text())
    assert metrics_a["test_accuracy"] == metrics_b["test_accuracy"]
    keys = ("epoch", "loss", "train_acc", "lr")
    assert [{k: h[k] for k in keys} for h in metrics_a["history"]] == [
        {k: h[k] for k in keys} for h in metrics_b["history"]
    ]
    # Only the last two epochs' checkpoints are kept.
    assert sorted(p.name for p in (resumed / "ckpt").iterdir()) == [
        "epoch_002.json", "epoch_002.keras", "epoch_003.json", "epoch_003.keras"
    ]  # fmt: skip


def test_data_without_test_images_is_refused_before_training(tmp_path):
    import dataclasses

    import tensorflow as tf

    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    data = load_image_data("fashion_mnist", train_limit=64, test_limit=1)
    no_test = dataclasses.replace(
        data, test_images=data.test_images[:0], test_labels=data.test_labels[:0]
    )
    message = (
        "the data (fashion_mnist) hold no test images, so the trained net could not be tested; "
        "pass a source with a test split, or a --test_fraction or --test_limit that leaves "
        "some test images"
    )
    with pytest.raises(TrainError) as refused:
        train(spec, no_test, tmp_path / "run", TrainConfig(epochs=1, batch_size=32))
    assert str(refused.value) == message
    assert not (tmp_path / "run").exists()
    # The binary: ten images in two classes, of which a test fraction of 0.01 keeps none.
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(5):
            pixels = tf.fill([28, 28, 1], tf.constant(40 * i, tf.uint8))
            (tmp_path / "images" / label / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    arch_file = tmp_path / "two.json"
    ArchSpec.from_block_string(SMALL_FASHION_NET.replace("classes:10", "classes:2")).save(arch_file)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "train.py"),
            f"--arch={arch_file}",
            f"--run_dir={tmp_path / 'folder_run'}",
            f"--image_folder={tmp_path / 'images'}",
            "--test_fraction=0.01",
            "--batch_size=4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"error: {message.replace('(fashion_mnist)', '(images)')}\n" in result.stderr
    assert not (tmp_path / "folder_run").exists()


def _tiny_data():
    source = {"dataset": "fashion_mnist", "train_limit": 128, "test_limit": 64}
    return source, load_image_data(**source)


def test_a_run_dir_of_another_config_is_replaced_if_it_finished_no_epoch_else_overwritten(
    tmp_path,
):
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    source, data = _tiny_data()
    run_dir = tmp_path / "run"
    # What a first attempt that failed before its first epoch left behind.
    run_dir.mkdir()
    (run_dir / "train_config.json").write_text(json.dumps({"train": {"batch_size": 4096}}))
    (run_dir / "tensorboard").mkdir()
    logged = []
    first = TrainConfig(epochs=1, batch_size=32)
    metrics = train(spec, data, run_dir, first, data_source=source, log=logged.append)
    assert logged[0] == (
        f"{run_dir} holds a training run with another architecture, config or data that "
        "finished no epoch; replacing it"
    )
    assert json.loads((run_dir / "train_config.json").read_text())["train"] == first.to_dict()
    assert [h["epoch"] for h in metrics["history"]] == [1]
    # A finished run of another config is refused, unless --overwrite.
    second = TrainConfig(epochs=2, batch_size=32)
    with pytest.raises(TrainError) as refused:
        train(spec, data, run_dir, second, data_source=source, log=lambda line: None)
    assert str(refused.value) == (
        f"{run_dir} holds a training run with another architecture, config or data (see "
        f"{run_dir / 'train_config.json'}); use another --run_dir, or pass --overwrite to delete it"
    )
    logged = []
    metrics = train(
        spec, data, run_dir, second, data_source=source, log=logged.append, overwrite=True
    )
    assert logged[0] == f"--overwrite: deleting the training run with another config in {run_dir}"
    assert not any(line.startswith("resuming") for line in logged)  # trained from scratch
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert json.loads((run_dir / "train_config.json").read_text())["train"] == second.to_dict()
    assert (run_dir / ".lock").is_file()


class StopError(Exception):
    pass


def _stop_after(epoch):
    def log(line):
        if line.startswith(f"epoch {epoch}/"):
            raise StopError

    return log


def _flip_bytes(path):
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 256] = bytes(b ^ 0xFF for b in blob[middle : middle + 256])
    path.write_bytes(bytes(blob))


def test_a_corrupt_latest_checkpoint_resumes_from_the_epoch_before(tmp_path):
    import keras

    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    source, data = _tiny_data()
    config = TrainConfig(epochs=3, batch_size=32)
    run_dir, ckpt = tmp_path / "run", tmp_path / "run" / "ckpt"
    with pytest.raises(StopError):
        train(spec, data, run_dir, config, data_source=source, log=_stop_after(2))
    first_epoch = json.loads((ckpt / "epoch_001.json").read_text())["history"]
    _flip_bytes(ckpt / "epoch_002.keras")
    logged = []
    metrics = train(spec, data, run_dir, config, data_source=source, log=logged.append)
    assert logged[0].startswith(f"cannot resume from {ckpt / 'epoch_002.keras'}: ")
    assert logged[1] == (
        f"resuming from {ckpt / 'epoch_001.keras'}, the newest readable checkpoint; the "
        f"unreadable newer ones were moved to {ckpt / 'unreadable'}"
    )
    assert logged[2] == f"resuming {run_dir} after epoch 1"
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][:1] == first_epoch
    assert sorted(p.name for p in (ckpt / "unreadable").iterdir()) == [
        "epoch_002.json", "epoch_002.keras"
    ]  # fmt: skip
    model = keras.models.load_model(run_dir / "model.keras")
    assert int(model.optimizer.iterations) == 3 * (128 // 32)


def test_checkpoints_of_which_none_is_readable_are_refused_and_kept(tmp_path):
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    source, data = _tiny_data()
    config = TrainConfig(epochs=3, batch_size=32)
    run_dir, ckpt = tmp_path / "run", tmp_path / "run" / "ckpt"
    with pytest.raises(StopError):
        train(spec, data, run_dir, config, data_source=source, log=_stop_after(2))
    # Killed between epoch 2's model and its progress file; and epoch 1's model
    # replaced by a later one (its optimizer past the end of epoch 1).
    (ckpt / "epoch_002.json").unlink()
    (ckpt / "epoch_001.keras").write_bytes((ckpt / "epoch_002.keras").read_bytes())
    before = _snapshot(ckpt)
    with pytest.raises(RunDirError) as refused:
        train(spec, data, run_dir, config, data_source=source, log=lambda line: None)
    assert str(refused.value) == (
        f"{ckpt} holds checkpoint files but none is readable (epoch_002.keras: [Errno 2] No "
        f"such file or directory: '{ckpt / 'epoch_002.json'}'; epoch_001.keras: its optimizer "
        "is at step 8, not at the end of epoch 1 (step 4)); delete "
        f"{run_dir} (or move it away) to start this training over"
    )
    assert _snapshot(ckpt) == before  # nothing moved or deleted
    assert not (run_dir / "metrics.json").exists()


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _tree(folder):
    """Every file below folder (the lock file aside) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def test_a_finished_run_without_its_checkpoints_is_never_deleted_without_overwrite(tmp_path):
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    source, data = _tiny_data()
    run_dir = tmp_path / "run"
    first = TrainConfig(epochs=1, batch_size=32)
    train(spec, data, run_dir, first, data_source=source, log=lambda line: None)
    # The run marked its directory, and every file it wrote is one a training run writes.
    assert run_dirs.marked_kind(run_dir) == run_dirs.run_kind(run_dir) == "train"
    assert run_dirs.foreign_entries(run_dir, "train") == []
    # The checkpoints pruned to save space; the user's notes beside the model.
    shutil.rmtree(run_dir / "ckpt")
    (run_dir / "notes.txt").write_text("the model of the paper's figure 3\n")
    before = _tree(run_dir)
    other = TrainConfig(epochs=2, batch_size=32)
    with pytest.raises(TrainError) as refused:
        train(spec, data, run_dir, other, data_source=source, log=lambda line: None)
    assert str(refused.value) == (
        f"{run_dir} holds a training run with another architecture, config or data (see "
        f"{run_dir / 'train_config.json'}); use another --run_dir, or move notes.txt out of "
        "it and pass --overwrite to delete it"
    )
    assert _tree(run_dir) == before  # the model and the notes kept
    # --overwrite deletes what the run wrote, never the user's files: refused, naming them.
    with pytest.raises(RunDirError) as refused:
        train(spec, data, run_dir, other, data_source=source, overwrite=True)
    assert str(refused.value) == (
        f"{run_dir} holds files no training run writes (notes.txt); move them out of it, "
        "or use another --run_dir"
    )
    assert _tree(run_dir) == before
    (run_dir / "notes.txt").rename(tmp_path / "notes.txt")
    logged = []
    metrics = train(
        spec, data, run_dir, other, data_source=source, log=logged.append, overwrite=True
    )
    assert logged[0] == f"--overwrite: deleting the training run with another config in {run_dir}"
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    # Without its marker (a run written before the marker) the finished run is kept too.
    (run_dir / run_dirs.MARKER_NAME).unlink()
    shutil.rmtree(run_dir / "ckpt")
    before = _tree(run_dir)
    with pytest.raises(TrainError, match="pass --overwrite to delete it"):
        train(spec, data, run_dir, first, data_source=source, log=lambda line: None)
    assert _tree(run_dir) == before


def test_a_run_dir_of_a_search_is_refused_by_the_training(tmp_path):
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    source, data = _tiny_data()
    for run_dir in (tmp_path / "marked", tmp_path / "before_the_marker"):
        run_dir.mkdir()
        (run_dir / "config.json").write_text("{}")
        (run_dir / "summary.json").write_text("{}")
    run_dirs.claim(tmp_path / "marked", "search")
    for run_dir in (tmp_path / "marked", tmp_path / "before_the_marker"):
        before = _tree(run_dir)
        with pytest.raises(RunDirError) as refused:
            train(
                spec,
                data,
                run_dir,
                TrainConfig(epochs=1, batch_size=32),
                data_source=source,
                overwrite=True,
            )
        assert str(refused.value) == (
            f"{run_dir} holds a search run, not a training run; pick another --run_dir"
        )
        assert _tree(run_dir) == before


def test_the_newest_readable_checkpoint_is_restored_and_the_unreadable_set_aside(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in ("epoch_001.keras", "epoch_001.json", "epoch_002.keras", "last.keras"):
        (ckpt / name).write_text(name)
    (ckpt / "progress.json").write_text(json.dumps({"epochs_done": 2}))
    found = checkpoints.keras_checkpoints(ckpt)
    # Oldest first; of two of epoch 2, the per-epoch files after (tried before) the legacy ones.
    assert [(c.number, c.path.name, [p.name for p in c.files]) for c in found] == [
        (1, "epoch_001.keras", ["epoch_001.keras", "epoch_001.json"]),
        (2, "last.keras", ["last.keras", "progress.json"]),
        (2, "epoch_002.keras", ["epoch_002.keras", "epoch_002.json"]),
    ]
    tried, logged = [], []

    def load(checkpoint):
        tried.append(checkpoint.path.name)
        if checkpoint.number == 2:
            raise ValueError(f"{checkpoint.path.name} is\n corrupt")
        return "model"

    restored = checkpoints.restore_newest(ckpt, found, load, job="training", log=logged.append)
    assert tried == ["epoch_002.keras", "last.keras", "epoch_001.keras"]
    assert (restored.checkpoint, restored.value) == (found[0], "model")
    assert restored.unreadable == (found[2], found[1]) and restored.aside == ckpt / "unreadable"
    assert logged == [
        f"cannot restore {ckpt / name}: {name} is corrupt; trying the checkpoint before it"
        for name in ("epoch_002.keras", "last.keras")
    ]
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "epoch_001.json",
        "epoch_001.keras",
        "unreadable",
    ]
    assert sorted(p.name for p in (ckpt / "unreadable").iterdir()) == [
        "epoch_002.keras", "last.keras", "progress.json"
    ]  # fmt: skip
    # None readable: refused, naming each, and nothing moved.
    before = _tree(ckpt)
    with pytest.raises(RunDirError) as refused:
        checkpoints.restore_newest(
            ckpt, checkpoints.keras_checkpoints(ckpt), lambda c: 1 / 0, job="training", log=len
        )
    assert str(refused.value) == (
        f"{ckpt} holds checkpoint files but none is readable (epoch_001.keras: division by "
        f"zero); delete {tmp_path} (or move it away) to start this training over"
    )
    assert _tree(ckpt) == before
    assert checkpoints.restore_newest(tmp_path / "none", [], load, job="training", log=len) is None
