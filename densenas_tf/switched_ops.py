"""One MBConv per mixed layer in traced graphs, run on the drawn op's variables.

A traced step that picks each layer's drawn op with ``tf.switch_case`` over
whole candidate ops holds every candidate's convolutions, batch norms and
their gradients: the graph, its build time and its memory grow with the
number of candidate ops (7 per layer on the fashion_mnist and imagenet
spaces). When a mixed layer's MBConv candidates differ only in kernel size
and expansion, ``run_drawn`` builds the MBConv once: the drawn op's variables
(its kernels, or their slices under nested sharing, and its batch norms'
parameters and statistics) are gathered from the candidates' zero-padded
stacks and sliced back to their shapes, the expansion and projection
convolutions and the three batch norms run once on them, only the depthwise
convolution (whose kernel size fixes the shapes of its gradient kernels) has
one small branch per distinct (kernel size, width), the updated batch-norm
statistics are written to the drawn op by a switch, and skip is a ``tf.cond``
around it all. The same kernels run on the same values as in the per-op
branches.
"""

from __future__ import annotations

import tensorflow as tf

from densenas_tf import op_layers, ops

_BN_ROLES = ("expand_bn", "dw_bn", "project_bn")


def switchable(mixed) -> bool:
    """Whether ``run_drawn`` can run this MixedOp: two or more MBConv
    candidates that all have an expansion convolution (or all have none)."""
    convs = [c for c in mixed.candidates if c.op_layers]
    if len(convs) < 2:
        return False
    expands = {"expand_bn" in c.op_layers for c in convs}
    return len(expands) == 1


def _conv_kernels(candidate) -> dict[str, tf.Tensor]:
    """The candidate's convolution kernels (slices of shared ones under nested sharing)."""
    if candidate.shared is not None:
        return candidate.shared.slices(candidate.op_name)
    layers = candidate.op_layers
    kernels = {"dw": layers["dw_conv"].kernel, "project": layers["project_conv"].kernel}
    if "expand_conv" in layers:
        kernels["expand"] = layers["expand_conv"].kernel
    return {k: tf.convert_to_tensor(v) for k, v in kernels.items()}


def _bn_values(bn) -> tuple[tf.Tensor, ...]:
    return tuple(
        tf.convert_to_tensor(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
    )


def _switch(position, branches):
    return branches[0]() if len(branches) == 1 else tf.switch_case(position, branches)


def run_drawn(mixed, index, x, training, weight_gradients: bool = True):
    """The output of MixedOp ``mixed``'s candidate number ``index`` (a scalar
    tensor) on x, with one MBConv in the graph (see the module doc)."""
    candidates = mixed.candidates
    convs = [k for k, c in enumerate(candidates) if c.op_layers]
    # Position of each candidate among the MBConvs; -1 for skip.
    table = [convs.index(k) if k in convs else -1 for k in range(len(candidates))]
    position = tf.gather(tf.constant(table, tf.int32), tf.cast(index, tf.int32))
    mbconvs = [candidates[k] for k in convs]
    if len(convs) == len(candidates):
        return _mbconv(mixed, mbconvs, position, x, training, weight_gradients)
    return tf.cond(
        position < 0,
        lambda: tf.identity(x),
        lambda: _mbconv(mixed, mbconvs, tf.maximum(position, 0), x, training, weight_gradients),
    )


def _mbconv(mixed, convs, position, x, training, weight_gradients):
    training = bool(training)
    first = convs[0]
    roles = [r for r in _BN_ROLES if r in first.op_layers]

    # Every candidate's values of one role, zero-padded to the largest shape
    # and stacked; the drawn op's are gathered and sliced back to its shape.
    # Plain dataflow (no switch, so no branch functions to differentiate);
    # gather and slice copy values exactly, and the gradient of an op not
    # drawn is zero, as from a switch.
    per_candidate = []
    for candidate in convs:
        kernels = _conv_kernels(candidate)
        values = [kernels.get("expand"), kernels["dw"], kernels["project"]]
        for role in roles:
            values.extend(_bn_values(candidate.op_layers[role]))
        per_candidate.append([v for v in values if v is not None])
    values = [
        _gather(position, [c[k] for c in per_candidate]) for k in range(len(per_candidate[0]))
    ]
    expand = values.pop(0) if "expand_bn" in roles else None
    dw_kernel, project = values.pop(0), values.pop(0)
    bn = {role: values[4 * k : 4 * k + 4] for k, role in enumerate(roles)}
    updates = []

    def batch_norm(role, y):
        gamma, beta, mean, variance = bn[role]
        layer = first.op_layers[role]
        y, new_mean, new_variance = op_layers.batch_norm_on(
            y, gamma, beta, mean, variance, layer.epsilon, layer.momentum, training
        )
        updates.append((role, new_mean, new_variance))
        return y

    y = x
    if expand is not None:
        y = op_layers.kernel_conv(y, expand, 1, False, weight_gradients)
        y = tf.nn.relu6(batch_norm("expand_bn", y))
    y = _depthwise(convs, position, y, dw_kernel, mixed.stride, weight_gradients)
    y = tf.nn.relu6(batch_norm("dw_bn", y))
    y = op_layers.kernel_conv(y, project, 1, False, weight_gradients)
    y = batch_norm("project_bn", y)
    if training:
        _write_statistics(convs, position, updates)
    if ops.has_residual(mixed.in_channels, mixed.out_channels, mixed.stride):
        y = x + y
    return y


def _depthwise(convs, position, y, kernel, stride, weight_gradients):
    """The depthwise convolution: one branch per distinct (kernel size, width),
    each with static shapes (``op_layers.kernel_conv`` picks its kernel
    gradient's implementation by them)."""
    per_op = []
    for c in convs:
        op = ops.parse_op(c.op_name)
        per_op.append((op.kernel_size, c.in_channels * op.expansion))
    shapes = list(dict.fromkeys(per_op))  # distinct, in order
    which = tf.constant([shapes.index(shape) for shape in per_op], tf.int32)

    def branch(k, width):
        def run():
            x = tf.ensure_shape(y, [*y.shape[:3], width])
            w = tf.ensure_shape(kernel, [k, k, width, 1])
            return op_layers.kernel_conv(x, w, stride, True, weight_gradients)

        return run

    if kernel.shape.is_fully_defined():
        # The draw was a constant that shape inference evaluated: its branch only
        # (the others' shapes would contradict the known ones).
        k, _, width, _ = (int(d) for d in kernel.shape)
        return branch(k, width)()
    return _switch(tf.gather(which, position), [branch(k, w) for k, w in shapes])


def _gather(position, tensors):
    """The tensor at ``position`` (a scalar tensor) of ``tensors`` (one per
    candidate, all of one rank), in its own shape."""
    shapes = [tuple(int(d) for d in t.shape) for t in tensors]
    if len(set(shapes)) == 1:
        return tf.gather(tf.stack(tensors), position)
    largest = [max(dims) for dims in zip(*shapes)]
    padded = [
        tf.pad(t, [[0, m - d] for d, m in zip(shape, largest)]) for t, shape in zip(tensors, shapes)
    ]
    size = tf.gather(tf.constant(shapes, tf.int32), position)
    return tf.slice(tf.gather(tf.stack(padded), position), tf.zeros_like(size), size)


def _write_statistics(convs, position, updates):
    """Writes each batch norm's updated moving statistics to the drawn op's
    variables (a switch with no gradient through it)."""

    def write(candidate):
        def branch():
            for role, mean, variance in updates:
                layer = candidate.op_layers[role]
                if not mean.shape.is_compatible_with(layer.moving_mean.shape):
                    # A draw that shape inference evaluated excludes this op.
                    break
                layer.moving_mean.assign(mean)
                layer.moving_variance.assign(variance)
            return tf.constant(0)

        return branch

    _switch(position, [write(c) for c in convs])
