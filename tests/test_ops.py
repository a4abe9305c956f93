"""The op registry: names, shapes and analytic costs against Keras."""

import numpy as np
import pytest

from densenas_tf.nn import op_layers
from densenas_tf.space import ops


def test_candidate_sets_match_the_paper():
    assert ops.HEAD_OPS == (
        "mbconv_k3_e3", "mbconv_k3_e6", "mbconv_k5_e3", "mbconv_k5_e6", "mbconv_k7_e3", "mbconv_k7_e6",
    )  # fmt: skip
    assert ops.STACKING_OPS == (*ops.HEAD_OPS, "skip")


def test_parse_and_short_names_round_trip():
    for name in (*ops.STACKING_OPS, "mbconv_k3_e1"):
        spec = ops.parse_op(name)
        assert ops.op_from_short_name(spec.short_name) == spec
    assert ops.parse_op("mbconv_k5_e6").short_name == "k5e6"


@pytest.mark.parametrize("bad", ["mbconv_k9_e6", "mbconv_k3_e2", "conv3x3", "", "mbconv_k3e6"])
def test_unknown_ops_are_rejected_with_the_known_forms(bad):
    with pytest.raises(ops.UnknownOpError, match="known ops are"):
        ops.parse_op(bad)


def test_skip_cannot_change_shape():
    with pytest.raises(ValueError, match="skip needs stride 1 and equal widths"):
        op_layers.make_op_layers("skip", 16, 24, 1, "s")


@pytest.mark.parametrize(
    "op,cin,cout,stride",
    [("mbconv_k3_e3", 16, 24, 2), ("mbconv_k7_e6", 24, 24, 1), ("mbconv_k3_e1", 32, 16, 1)],
)
def test_op_layers_match_analytic_costs(op, cin, cout, stride):
    import keras

    layers = op_layers.make_op_layers(op, cin, cout, stride, "t")
    inputs = keras.Input((14, 14, cin))
    model = keras.Model(inputs, op_layers.apply_op_layers(layers, inputs))
    assert model.count_params() == ops.op_param_count(op, cin, cout)
    assert model.output.shape == (None, 14 // stride, 14 // stride, cout)
    has_add = any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    assert has_add == (stride == 1 and cin == cout)
    # Expansion is on the input width; e1 has no expansion conv.
    convs = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    expansion = ops.parse_op(op).expansion
    assert len(convs) == (1 if expansion == 1 else 2)
    assert convs[-1].kernel.shape == (1, 1, cin * expansion, cout)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(np.isclose(bn.epsilon, 1e-3) for bn in bns)


def test_mult_adds_of_a_known_op():
    # k3e6, 16->24, stride 2 on 112x112: expand at 112, depthwise and project at 56.
    expected = 112 * 112 * 16 * 96 + 56 * 56 * 9 * 96 + 56 * 56 * 96 * 24
    assert ops.op_mult_adds("mbconv_k3_e6", 16, 24, 112, 2) == expected
    assert ops.op_mult_adds("skip", 16, 16, 112, 1) == 0


def test_fused_batch_norm_matches_keras():
    import keras
    import tensorflow as tf

    x = tf.random.stateless_normal((4, 5, 5, 3), seed=[0, 1]) * 3 + 1
    layers = []
    for _ in range(2):
        bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
        bn.build(x.shape)
        layers.append(bn)
    keras_bn, fused_bn = layers
    np.testing.assert_allclose(
        keras_bn(x, training=True), op_layers.fused_batch_norm(fused_bn, x, True), atol=1e-5
    )
    np.testing.assert_allclose(keras_bn.moving_mean, fused_bn.moving_mean, atol=1e-6)
    # The fused kernel feeds the unbiased batch variance (n / (n - 1)) to the
    # moving average, as PyTorch does; Keras feeds the biased one.
    n = 4 * 5 * 5
    batch_var = tf.math.reduce_variance(x, axis=[0, 1, 2]).numpy()
    np.testing.assert_allclose(
        fused_bn.moving_variance, 0.9 + 0.1 * batch_var * n / (n - 1), rtol=1e-5
    )
    np.testing.assert_allclose(
        fused_bn(x, training=False), op_layers.fused_batch_norm(fused_bn, x, False), atol=1e-5
    )


def test_direct_op_calls_match_keras_calls():
    import tensorflow as tf

    layers = op_layers.make_op_layers("mbconv_k5_e3", 8, 8, 1, "t")
    x = tf.random.stateless_normal((2, 6, 6, 8), seed=[3, 4])
    expected = op_layers.apply_op_layers(layers, x, training=False)
    direct = op_layers.apply_op_layers(layers, x, training=False, direct=True)
    np.testing.assert_allclose(direct, expected, atol=1e-5)
    # In training both normalise with batch statistics: outputs agree too.
    expected = op_layers.apply_op_layers(layers, x, training=True)
    direct = op_layers.apply_op_layers(layers, x, training=True, direct=True)
    np.testing.assert_allclose(direct, expected, atol=1e-4)


@pytest.mark.parametrize(
    "kernel_size,stride,channels,size",
    [(3, 1, 32, 9), (5, 1, 32, 9), (5, 2, 24, 9), (7, 2, 48, 10), (7, 1, 8, 7), (5, 2, 32, 8)],
)
def test_depthwise_gradients_equal_tensorflows(kernel_size, stride, channels, size):
    """kernel_conv's own depthwise gradient (input by oneDNN's or TensorFlow's
    kernel, kernel gradient by the faster of the two for its shape) equals the
    registered gradient of tf.nn.depthwise_conv2d, odd and even sizes alike."""
    import tensorflow as tf

    x = tf.random.stateless_normal((3, size, size, channels), seed=[1, 2])
    kernel = tf.Variable(
        tf.random.stateless_normal((kernel_size, kernel_size, channels, 1), seed=[5, 6])
    )
    upstream = tf.random.stateless_normal(
        (3, -(-size // stride), -(-size // stride), channels), seed=[7, 8]
    )

    def grads(run):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = run()
        return y, *tape.gradient(y, [x, kernel], output_gradients=upstream)

    ours = grads(lambda: op_layers.kernel_conv(x, kernel, stride, depthwise=True))
    reference = grads(lambda: tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "SAME"))
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # The architecture step's variant passes the input's gradient only.
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = op_layers.kernel_conv(x, kernel, stride, depthwise=True, weight_gradients=False)
    dx, dk = tape.gradient(y, [x, kernel], output_gradients=upstream)
    assert dk is None
    np.testing.assert_allclose(dx, reference[1], rtol=1e-4, atol=1e-4)


def test_eigen_kernel_gradient_only_where_it_is_faster():
    assert op_layers.eigen_depthwise_kernel_gradient(5, 24)
    assert op_layers.eigen_depthwise_kernel_gradient(7, 432)
    assert not op_layers.eigen_depthwise_kernel_gradient(3, 432)
    assert not op_layers.eigen_depthwise_kernel_gradient(7, 16)
    assert op_layers._same_padding(9, 5, 2) == (2, 2)
    assert op_layers._same_padding(10, 7, 2) == (2, 3)
    assert op_layers._same_padding(7, 3, 1) == (1, 1)
