"""Retraining with another class count: the ArchSpec's head replaced
(arch_spec.with_num_classes) and the training that takes it."""

import dataclasses
import json

import pytest
from conftest import SMALL_FASHION_NET

from densenas_tf.space.arch_spec import (
    ArchSpec,
    ArchSpecError,
    count_costs,
    load_arch,
    with_num_classes,
)


def _hundred_class_densenas_c():
    return dataclasses.replace(load_arch("densenas_c"), num_classes=100, name="search100")


def test_a_hundred_class_spec_becomes_a_thousand_class_one_and_the_original_stays():
    original = _hundred_class_densenas_c()
    before = original.to_json()
    wider = with_num_classes(original, 1000)
    assert wider.num_classes == 1000
    assert wider.to_block_string().endswith("| classes:1000")
    assert original.to_block_string().endswith("| classes:100")
    assert original.to_json() == before  # unchanged
    # Only the classifier grows: final_conv_width weights and one bias per new class.
    added = 900 * (original.final_conv_width + 1)
    assert count_costs(wider).params - count_costs(original).params == added
    assert count_costs(wider).mult_adds - count_costs(original).mult_adds == (
        900 * original.final_conv_width
    )
    assert wider.blocks == original.blocks and wider.stem == original.stem
    assert wider.provenance["head_replaced"] == {"from": 100, "to": 1000}
    # The class count is in the document: JSON round trip and block string agree.
    again = ArchSpec.from_json(wider.to_json())
    assert again == wider and json.loads(wider.to_json())["num_classes"] == 1000
    # Replaced twice, the provenance keeps the first count.
    back = with_num_classes(wider, 10)
    assert back.provenance["head_replaced"] == {"from": 100, "to": 10}
    assert with_num_classes(original, 100) is original


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, True, "10"])
def test_fewer_than_two_classes_or_no_integer_is_refused(bad):
    with pytest.raises(ArchSpecError, match="at least 2"):
        with_num_classes(_hundred_class_densenas_c(), bad)


@pytest.mark.slow
def test_training_replaces_the_head_and_records_the_new_class_count(tmp_path):
    from densenas_tf.data.sources import load_image_data
    from densenas_tf.train.trainer import TrainConfig, TrainError, train

    five = ArchSpec.from_block_string(SMALL_FASHION_NET.replace("classes:10", "classes:5"))
    data = load_image_data("fashion_mnist", train_limit=64, test_limit=32)
    with pytest.raises(TrainError, match=r"tools/train\.py --num_classes=10"):
        train(five, data, tmp_path / "refused", TrainConfig(epochs=1), log=lambda s: None)
    config = TrainConfig(epochs=1, batch_size=32)
    metrics = train(five, data, tmp_path / "run", config, num_classes=10, log=lambda s: None)
    assert metrics["block_string"].endswith("| classes:10")
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    trained = ArchSpec.from_dict(record["arch"])
    assert trained.num_classes == 10
    assert trained.provenance["head_replaced"] == {"from": 5, "to": 10}
    import keras

    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert model.output_shape == (None, 10)


def _prepare_imagenet_stand_in(data_dir):
    """A prepared tfds ``imagenet2012`` in data_dir, as `tfds build` leaves it (its
    features, 1,000 class names, version): 16 training and 8 validation images of
    random pixels and sizes, written by a builder made here."""
    import numpy as np
    import tensorflow_datasets as tfds

    real = tfds.builder("imagenet2012", data_dir=str(data_dir))
    features = real.info.features
    names = features["label"].names

    class StandIn(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "imagenet2012"
        VERSION = real.version

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._examples(16, 0), "validation": self._examples(8, 1)}

        def _examples(self, count, seed):
            rng = np.random.default_rng(seed)
            for i in range(count):
                height, width = rng.integers(40, 80, 2)
                label = int(rng.integers(0, 1000))
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                yield i, {"image": image, "label": label, "file_name": f"{names[label]}_{i}.JPEG"}

        def _generate_examples(self):
            raise NotImplementedError

    tfds.disable_progress_bar()
    StandIn(data_dir=str(data_dir)).download_and_prepare()


@pytest.mark.slow
def test_the_imagenet_retraining_command_runs_as_written_on_a_stand_in(tmp_path):
    """docs/scale.md's "Retraining on ImageNet": a net searched on ImageNet-100
    (100 classes) retrained with the paper's recipe on tfds's imagenet2012 (1,000
    classes), with --num_classes=1000; here on a prepared stand-in, one short epoch
    (--epochs and --batch_size are the only additions)."""
    import keras
    from helpers import run_python

    tfds_dir = tmp_path / "tfds"
    _prepare_imagenet_stand_in(tfds_dir)
    searched = ArchSpec.from_block_string(
        "224x224x3 | stem:c16s2+k3e1>8 | 8>16:k3e3s2 | 16>24:k3e3s2 | 24>32:k3e3s2 | "
        "final:64 | classes:100",
        name="search_imagenet100",
    )
    arch_file = tmp_path / "runs" / "search_imagenet100" / "arch.json"
    arch_file.parent.mkdir(parents=True)
    searched.save(arch_file)
    run_dir = tmp_path / "runs" / "train_imagenet"
    result = run_python(
        "tools/train.py",
        "--recipe=imagenet",
        f"--arch={arch_file}",
        f"--run_dir={run_dir}",
        f"--tfds_data_dir={tfds_dir}",
        "--strategy=mirrored",
        "--num_classes=1000",
        "--epochs=1",
        "--batch_size=8",
        before=f"import os; os.environ['DENSENAS_CACHE_DIR'] = {str(tmp_path / 'cache')!r}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "search_imagenet100: test accuracy" in result.stdout
    assert "(8 images)" in result.stdout  # the validation split is the test split
    record = json.loads((run_dir / "train_config.json").read_text())
    trained = ArchSpec.from_dict(record["arch"])
    assert trained.num_classes == 1000 and trained.input_shape == (224, 224, 3)
    assert trained.provenance["head_replaced"] == {"from": 100, "to": 1000}
    assert record["data"]["tfds_name"] == "imagenet2012" and record["train"]["lr"] == 0.5
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["block_string"].endswith("| classes:1000")
    assert metrics["params"] == count_costs(trained).params
    assert keras.models.load_model(run_dir / "model.keras").output_shape == (None, 1000)
