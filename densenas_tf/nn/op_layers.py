"""Keras layers of the registry's ops, from standard Keras layers only.

The supernet and derived models both build their ops here, so shapes,
parameter counts and latency keys agree by construction.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from densenas_tf.space.ops import BN_EPSILON, check_op_shape, has_residual, parse_op

# Sub-layers of an op that hold weights, in the order they run.
WEIGHTED_ROLES = (
    "expand_conv",
    "expand_bn",
    "dw_conv",
    "dw_bn",
    "project_conv",
    "project_bn",
)


def _bn(name: str, momentum: float, synchronized: bool) -> keras.layers.Layer:
    kwargs = {"synchronized": True} if synchronized else {}
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=momentum, name=name, **kwargs
    )


def make_op_layers(
    op_name: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    name: str,
    bn_momentum: float = 0.9,
    synchronized_bn: bool = False,
) -> dict[str, keras.layers.Layer]:
    """Creates the standard Keras layers of one op, keyed by role.

    MBConv: 1x1 conv to E*C_in (omitted when E == 1), BN, ReLU6; depthwise KxK
    with the stride, BN, ReLU6; 1x1 conv to C_out, BN; residual add when the
    stride is 1 and widths agree. Skip has no layers.
    """
    op = parse_op(op_name)
    check_op_shape(op, in_channels, out_channels, stride)
    if op.is_skip:
        return {}
    hidden = in_channels * op.expansion
    layers: dict[str, keras.layers.Layer] = {}
    if op.expansion != 1:
        layers["expand_conv"] = keras.layers.Conv2D(
            hidden, 1, use_bias=False, name=f"{name}_expand_conv"
        )
        layers["expand_bn"] = _bn(f"{name}_expand_bn", bn_momentum, synchronized_bn)
        layers["expand_act"] = keras.layers.Activation("relu6", name=f"{name}_expand_relu6")
    layers["dw_conv"] = keras.layers.DepthwiseConv2D(
        op.kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        name=f"{name}_dw_conv",
    )
    layers["dw_bn"] = _bn(f"{name}_dw_bn", bn_momentum, synchronized_bn)
    layers["dw_act"] = keras.layers.Activation("relu6", name=f"{name}_dw_relu6")
    layers["project_conv"] = keras.layers.Conv2D(
        out_channels, 1, use_bias=False, name=f"{name}_project_conv"
    )
    layers["project_bn"] = _bn(f"{name}_project_bn", bn_momentum, synchronized_bn)
    if has_residual(in_channels, out_channels, stride):
        layers["add"] = keras.layers.Add(name=f"{name}_add")
    return layers


def apply_op_layers(
    layers: dict[str, keras.layers.Layer],
    x,
    training=None,
    direct: bool = False,
    weight_gradients: bool = True,
):
    """Runs the layers made by make_op_layers on x (symbolic or eager).

    With ``direct`` (the supernet's steps) each built layer's ``call`` runs
    without Keras's per-call bookkeeping and batch norm uses the fused kernel
    (``fused_batch_norm``): the same layers and variables, less overhead.
    With ``weight_gradients=False`` (direct only) the convolutions pass
    gradients to their inputs but compute none for their kernels.
    """
    if not layers:
        return x

    def run(role, y):
        layer = layers[role]
        if not direct:
            return layer(y, training=training) if role.endswith("_bn") else layer(y)
        if role.endswith("_bn"):
            return fused_batch_norm(layer, y, training)
        if role.endswith("_act"):
            return tf.nn.relu6(y)
        return direct_conv(layer, y, weight_gradients)

    y = x
    for role in ("expand_conv", "expand_bn", "expand_act", "dw_conv", "dw_bn", "dw_act"):
        if role in layers:
            y = run(role, y)
    y = run("project_bn", run("project_conv", y))
    if "add" in layers:
        y = x + y if direct else layers["add"]([x, y])
    return y


def direct_conv(layer: keras.layers.Layer, x, weight_gradients: bool = True):
    """A built Conv2D or DepthwiseConv2D (no bias, 'same' padding) as one raw
    TensorFlow op on x (``kernel_conv`` on the layer's kernel)."""
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    return kernel_conv(x, layer.kernel, layer.strides[0], depthwise, weight_gradients)


def kernel_conv(
    x, kernel, stride: int, depthwise: bool, weight_gradients: bool = True, kernel_gradient=None
):
    """A convolution ('same' padding, no bias) of x with ``kernel``, cast to
    x's dtype (mixed precision); depthwise when ``depthwise``.

    ``weight_gradients=False``: the op's gradient is its input's only.
    TensorFlow's registered gradients always compute the kernel's too (for a
    depthwise conv on the CPU that is the slowest kernel of all, several times
    the forward), which the architecture step would throw away. A depthwise
    kernel's gradient is computed by ``depthwise_kernel_gradient`` (its
    kernel's shape must be known), or by ``kernel_gradient(y, k)``, called in
    the forward with the op's input and kernel, which returns the function of
    the output's gradient that computes it. TensorFlow's kernels take a
    depthwise kernel's size and width at run time: 'same' padding gives
    every kernel size one output shape."""
    kernel = tf.cast(kernel, x.dtype)
    strides = [1, stride, stride, 1]

    def forward(y, k):
        if depthwise:
            return tf.raw_ops.DepthwiseConv2dNative(
                input=y, filter=k, strides=strides, padding="SAME"
            )
        return tf.nn.conv2d(y, k, strides, "SAME")

    def input_gradient(y, k, upstream):
        backprop = (
            tf.raw_ops.DepthwiseConv2dNativeBackpropInput
            if depthwise
            else tf.raw_ops.Conv2DBackpropInput
        )
        return backprop(
            input_sizes=tf.shape(y),
            filter=k,
            out_backprop=upstream,
            strides=strides,
            padding="SAME",
        )

    if weight_gradients and not depthwise:
        return forward(x, kernel)
    if not weight_gradients:
        kernel = tf.stop_gradient(kernel)

        @tf.custom_gradient
        def input_gradient_only(y):
            return forward(y, kernel), lambda upstream: input_gradient(y, kernel, upstream)

        return input_gradient_only(x)

    @tf.custom_gradient
    def depthwise_conv(y, k):
        if kernel_gradient is None:
            of_kernel = lambda upstream: depthwise_kernel_gradient(y, upstream, k.shape, stride)  # noqa: E731
        else:
            of_kernel = kernel_gradient(y, k)

        def grad(upstream):
            return input_gradient(y, k, upstream), of_kernel(upstream)

        return forward(y, k), grad

    return depthwise_conv(x, kernel)


def _same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """The (before, after) padding of one spatial axis under 'same' padding."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def eigen_depthwise_kernel_gradient(kernel_size: int, channels: int) -> bool:
    """Whether a depthwise kernel's gradient is computed by TensorFlow's own
    (Eigen) kernel rather than oneDNN's.

    With oneDNN on, the gradient of a 5x5 or 7x7 depthwise kernel over 24 or
    more channels mostly took 1.1-3.4 times as long with oneDNN's kernel as
    with TensorFlow's own, and that of a 3x3 kernel or of few channels 0.2-0.9
    times (``tools/bench_kernels.py``, README "Speed"). Requesting the same
    padding as explicit amounts keeps TensorFlow's kernel: oneDNN does not
    take explicit padding there."""
    return kernel_size >= 5 and channels >= 24


def depthwise_kernel_gradient(x, upstream, kernel_shape, stride: int, explicit=None):
    """The gradient of a depthwise kernel of ``kernel_shape`` (k, k, C, 1)
    applied to x with 'same' padding and ``stride``, given the output's
    gradient ``upstream``: TensorFlow's registered gradient, with the padding
    spelled out (TensorFlow's own kernel) when ``explicit``, by default when
    ``eigen_depthwise_kernel_gradient`` says so and x's spatial shape is known."""
    k, _, channels, multiplier = (int(d) for d in kernel_shape)
    if explicit is None:
        explicit = eigen_depthwise_kernel_gradient(k, channels) and None not in tuple(x.shape)[1:3]
    sizes = tf.constant([k, k, channels, multiplier], tf.int32)
    return depthwise_filter_backprop(x, upstream, sizes, stride, k if explicit else None)


def depthwise_filter_backprop(x, upstream, filter_sizes, stride: int, explicit_size=None):
    """A depthwise kernel's gradient (its shape ``filter_sizes``, a tensor,
    'same' padding): with the padding of a ``explicit_size`` x
    ``explicit_size`` kernel spelled out (TensorFlow's own kernel; x's
    spatial shape must be known), or as 'SAME' when ``explicit_size`` is None
    (oneDNN's kernel when oneDNN is on)."""
    padding = {"padding": "SAME"}
    if explicit_size is not None:
        top, bottom = _same_padding(int(x.shape[1]), explicit_size, stride)
        left, right = _same_padding(int(x.shape[2]), explicit_size, stride)
        padding = {
            "padding": "EXPLICIT",
            "explicit_paddings": [0, 0, top, bottom, left, right, 0, 0],
        }
    return tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=x,
        filter_sizes=filter_sizes,
        out_backprop=upstream,
        strides=[1, stride, stride, 1],
        **padding,
    )


def replicas_in_sync() -> int:
    if not tf.distribute.has_strategy():
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


def _synchronized_batch_norm(bn: keras.layers.BatchNormalization, x):
    """Training-mode batch norm over the global batch of all replicas.

    Two passes (mean, then the mean squared deviation), each all-reduced: the
    single-pass E[x^2] - E[x]^2 loses precision when the mean is large.
    """
    context = tf.distribute.get_replica_context()
    out_dtype = x.dtype
    x = tf.cast(x, tf.float32)  # statistics in float32 under mixed precision
    axes = [0, 1, 2]
    count = context.all_reduce("sum", tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype))
    mean = context.all_reduce("sum", tf.reduce_sum(x, axis=axes)) / count
    variance = context.all_reduce("sum", tf.reduce_sum(tf.square(x - mean), axis=axes)) / count
    momentum = bn.momentum
    unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
    bn.moving_mean.assign(bn.moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum))
    bn.moving_variance.assign(
        bn.moving_variance * momentum + tf.stop_gradient(unbiased) * (1.0 - momentum)
    )
    y = tf.nn.batch_normalization(x, mean, variance, bn.beta, bn.gamma, bn.epsilon)
    return tf.cast(y, out_dtype)


def batch_norm_on(x, gamma, beta, mean, variance, epsilon, momentum, training):
    """Batch norm with TensorFlow's fused kernel on the given tensors.

    Returns the normalised ``x`` and, in training, the moving mean and
    variance after this batch's update (Keras's rule: ``momentum * old +
    (1 - momentum) * batch``); out of training, ``mean`` and ``variance``
    as they were."""
    y, new_mean, new_variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=gamma,
        offset=beta,
        mean=mean,
        variance=variance,
        epsilon=epsilon,
        exponential_avg_factor=1.0 - momentum if training else 1.0,
        is_training=training,
    )
    return y, new_mean, new_variance


def fused_batch_norm(bn: keras.layers.BatchNormalization, x, training):
    """A Keras BatchNormalization layer's computation with TensorFlow's fused
    kernel (on its own variables, with the same moving-average update).

    Across several replicas a synchronised layer normalises with the global
    batch's statistics instead (``_synchronized_batch_norm``)."""
    training = bool(training)
    if training and bn.synchronized and replicas_in_sync() > 1:
        return _synchronized_batch_norm(bn, x)
    y, moving_mean, moving_variance = batch_norm_on(
        x,
        bn.gamma,
        bn.beta,
        bn.moving_mean,
        bn.moving_variance,
        bn.epsilon,
        bn.momentum,
        training,
    )
    if training:
        bn.moving_mean.assign(moving_mean)
        bn.moving_variance.assign(moving_variance)
    return y


def make_conv_bn_act_layers(
    filters: int,
    kernel_size: int,
    stride: int,
    name: str,
    bn_momentum: float = 0.9,
    synchronized_bn: bool = False,
) -> dict[str, keras.layers.Layer]:
    """A plain conv, BN, ReLU6 (the stem conv and the final 1x1 conv)."""
    return {
        "conv": keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            padding="same",
            use_bias=False,
            name=f"{name}_conv",
        ),
        "bn": _bn(f"{name}_bn", bn_momentum, synchronized_bn),
        "act": keras.layers.Activation("relu6", name=f"{name}_relu6"),
    }


def apply_conv_bn_act(
    layers: dict[str, keras.layers.Layer],
    x,
    training=None,
    direct: bool = False,
    weight_gradients: bool = True,
):
    """Runs conv, BN, ReLU6; ``direct`` and ``weight_gradients`` as in apply_op_layers."""
    if direct:
        conv = direct_conv(layers["conv"], x, weight_gradients)
        y = fused_batch_norm(layers["bn"], conv, training)
        return tf.nn.relu6(y)
    y = layers["conv"](x)
    y = layers["bn"](y, training=training)
    return layers["act"](y)
