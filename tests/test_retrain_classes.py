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
