"""Derived models: plain Keras Functional models whose costs match the analytic counts."""

import keras
import numpy as np
import pytest

from densenas_tf.nn.models import build_model
from densenas_tf.space.arch_spec import ArchSpec, count_costs, load_arch

STANDARD_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.Add,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.Dropout,
    keras.layers.Dense,
)

SMALL = ArchSpec.from_block_string(
    "16x16x1 | stem:c8s1+k3e1>8 | 8>12:k3e3s2[k5e6] | 12>24:k7e6s2 | 24>32:k5e3s1[k3e6,k3e3] "
    "| final:48 | classes:4",
    name="small",
)


@pytest.mark.parametrize("name", ["densenas_a", "densenas_b", "densenas_c", "mobilenet_v2"])
def test_params_analytic_equal_keras(name):
    spec = load_arch(name)
    model = build_model(spec)
    cost = count_costs(spec)
    assert model.count_params() == cost.total_params
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == cost.params
    assert model.output_shape == (None, 1000)


@pytest.mark.slow
def test_mobilenet_v2_matches_keras_applications():
    reference = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    assert build_model(load_arch("mobilenet_v2")).count_params() == reference.count_params()


def test_derived_model_uses_standard_layers_only():
    model = build_model(SMALL)
    assert all(type(layer) in STANDARD_LAYERS for layer in model.layers)
    # Residual adds appear exactly where stride is 1 and widths agree.
    adds = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert adds == ["stem_op_add", "b1_l1_add", "b3_l1_add", "b3_l2_add"]


@pytest.mark.slow
def test_keras_save_and_load_gives_identical_outputs(tmp_path):
    model = build_model(SMALL)
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype("float32")
    # Move BN statistics away from their initial values so the check is not trivial.
    model(images, training=True)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects needed
    np.testing.assert_array_equal(
        model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    )
    assert [w.name for w in loaded.weights] == [w.name for w in model.weights]


def test_dropout_rate_is_checked():
    with pytest.raises(ValueError, match="dropout_rate"):
        build_model(SMALL, dropout_rate=1.5)
