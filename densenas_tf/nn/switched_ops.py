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
convolutions and the three batch norms run once on them (the depthwise one
too, its kernel's size known at run time only; its kernel gradient has one
small branch per implementation it may take), the updated batch-norm
statistics are written to the drawn op, and skip is a ``tf.cond``
around it all. The same kernels run on the same values as in the per-op
branches.

Without nested sharing, the drawn op's variables are read through their
handles: each role's handles (one per candidate) are stacked and the drawn
one gathered, so reading, updating (``Recording``, ``MomentumSGD``) and
writing batch-norm statistics are a few plain ops per role whatever the
number of candidates, with no per-candidate branch functions. A weight step
under ``recording`` differentiates the loss with respect to the values read
(the drawn op's weights): no gradient of an op that was not drawn is
computed, summed or stored, and the update touches the drawn op's
variables only.
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

from densenas_tf.nn import op_layers
from densenas_tf.space import ops

_BN_ROLES = ("expand_bn", "dw_bn", "project_bn")
_state = threading.local()


class Recording:
    """The switched layers of one traced weight step (see the module doc).

    ``sources``: the tensors to differentiate the loss by (watched on the
    tape); ``updates``: per layer, ``(position, grads_slice, per_candidate,
    can_skip)`` where ``position`` is the drawn MBConv's index among the
    layer's MBConvs (-1 for skip, possible when ``can_skip``: nothing to
    update), ``grads_slice`` the range of
    ``sources`` that is that layer's, and ``per_candidate`` the variables
    (one list per MBConv, aligned with the layer's sources) they update;
    each source has the drawn variable's shape."""

    def __init__(self, tape):
        self.tape = tape
        self.sources: list[tf.Tensor] = []
        self.updates: list[tuple[tf.Tensor, slice, list[list], bool]] = []
        self._layers: set[int] = set()

    def variable_ids(self) -> set[int]:
        """ids of every variable the recorded layers update (all their MBConvs')."""
        return {id(v) for _, _, per, _ in self.updates for vs in per for v in vs}

    def add(self, mixed, position, values, per_candidate, can_skip: bool) -> None:
        if id(mixed) in self._layers:
            raise ValueError(
                f"mixed layer {mixed.name!r} ran twice in one recorded weight step; "
                "its gradients would have to be summed: record one draw per layer"
            )
        self._layers.add(id(mixed))
        start = len(self.sources)
        self.tape.watch(values)
        self.sources.extend(values)
        self.updates.append((position, slice(start, len(self.sources)), per_candidate, can_skip))


@contextlib.contextmanager
def recording(tape):
    """Within it, traced one-op draws of switchable layers without nested
    sharing record their drawn weights on ``tape`` (yields the Recording)."""
    previous = getattr(_state, "recording", None)
    _state.recording = Recording(tape)
    try:
        yield _state.recording
    finally:
        _state.recording = previous


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
    drawn = tf.maximum(position, 0)
    recording = getattr(_state, "recording", None)
    if mixed.shared is not None:
        # Nested sharing: kernels are slices of the shared ones, not variables
        # of their own; gathered from zero-padded stacks in _mbconv.
        values = None
    elif recording is not None and weight_gradients:
        values = _read_drawn(mbconvs, drawn)
        sources = [v for v, t in zip(values, _is_trainable(mbconvs)) if t]
        can_skip = len(convs) < len(candidates)
        recording.add(mixed, position, sources, _trainable_variables(mbconvs), can_skip)
    elif not weight_gradients:
        values = _read_drawn(mbconvs, drawn)
    else:
        values = None  # gradients must reach the variables: gathered from stacks

    def run():
        return _mbconv(mixed, mbconvs, drawn, x, training, weight_gradients, values)

    if len(convs) == len(candidates):
        return run()
    return tf.cond(position < 0, lambda: tf.identity(x), run)


def _candidate_values(candidate) -> list[tf.Tensor]:
    """A candidate's values in the order ``_mbconv`` takes them: its kernels
    (expansion, depthwise, projection), then per batch norm gamma, beta,
    moving mean and moving variance."""
    kernels = _conv_kernels(candidate)
    values = [kernels.get("expand"), kernels["dw"], kernels["project"]]
    for role in _BN_ROLES:
        if role in candidate.op_layers:
            values.extend(_bn_values(candidate.op_layers[role]))
    return [v for v in values if v is not None]


def tf_variable(variable):
    """The tf.Variable (or distributed variable) behind a Keras variable."""
    return variable if isinstance(variable, tf.Variable) else getattr(variable, "value", variable)


def gathered_handle(variables, position) -> tf.Tensor:
    """The resource handle of ``variables[position]`` (a scalar tensor)."""
    handles = [tf_variable(v).handle for v in variables]
    return tf.gather(tf.stack(handles), position)


def _candidate_variables(candidate) -> list:
    """A candidate's variables (no nested sharing), in ``_candidate_values``' order."""
    layers = candidate.op_layers
    out = [layers[r].kernel for r in ("expand_conv", "dw_conv", "project_conv") if r in layers]
    for role in _BN_ROLES:
        if role in layers:
            bn = layers[role]
            out.extend([bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance])
    return out


def _read_drawn(convs, position) -> list[tf.Tensor]:
    """The drawn candidate's values (``_candidate_values``' order), each read
    through its gathered handle, with the dimensions all candidates share."""
    per_candidate = [_candidate_variables(c) for c in convs]
    values = []
    for role in zip(*per_candidate):
        shapes = [tuple(int(d) for d in v.shape) for v in role]
        common = [dims[0] if len(set(dims)) == 1 else None for dims in zip(*shapes)]
        value = tf.raw_ops.ReadVariableOp(
            resource=gathered_handle(role, position), dtype=tf_variable(role[0]).dtype
        )
        values.append(tf.ensure_shape(value, common))
    return values


def _trainable_variables(convs) -> list[list]:
    """Per candidate (no nested sharing), the variables behind the trainable
    entries of ``_candidate_values``, in that order; checked against the
    candidate's own list so that no trainable variable goes without update."""
    flags = _is_trainable(convs)
    per_candidate = []
    for candidate in convs:
        variables = [v for v, t in zip(_candidate_variables(candidate), flags) if t]
        if {id(v) for v in variables} != {id(v) for v in candidate.trainable_variables}:
            raise ValueError(
                f"candidate {candidate.name!r} has trainable variables that the switched "
                "MBConv does not update (a bias, or an unscaled batch norm?)"
            )
        per_candidate.append(variables)
    return per_candidate


def _is_trainable(convs) -> list[bool]:
    """Which entries of ``_candidate_values`` are trainable (kernels, gamma, beta)."""
    first = convs[0]
    flags = [True] * (3 if "expand_bn" in first.op_layers else 2)
    for role in _BN_ROLES:
        if role in first.op_layers:
            flags.extend([True, True, False, False])
    return flags


def _mbconv(mixed, convs, position, x, training, weight_gradients, values=None):
    training = bool(training)
    first = convs[0]
    roles = [r for r in _BN_ROLES if r in first.op_layers]

    if values is None:
        # Every candidate's values of one role, zero-padded to the largest shape
        # and stacked; the drawn op's are gathered and sliced back to its shape.
        # Plain dataflow (no switch, so no branch functions to differentiate);
        # gather and slice copy values exactly, and the gradient of an op not
        # drawn is zero, as from a switch.
        per_candidate = [_candidate_values(c) for c in convs]
        values = [
            _gather(position, [c[k] for c in per_candidate]) for k in range(len(per_candidate[0]))
        ]
    values = list(values)
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
    """The depthwise convolution on the drawn op's kernel, one op whatever its
    size and width (``op_layers.kernel_conv``). Only its kernel gradient has
    branches, one per distinct implementation that
    ``op_layers.eigen_depthwise_kernel_gradient`` picks for the candidates
    (oneDNN's, or TensorFlow's own per kernel size, whose padding must be
    spelled out), and only in the weight step."""
    if kernel.shape.is_fully_defined() or not weight_gradients:
        # A known kernel shape (one candidate shape, or a draw that shape
        # inference evaluated) or no kernel gradient: nothing to choose.
        return op_layers.kernel_conv(y, kernel, stride, True, weight_gradients)
    spatial_known = None not in tuple(y.shape)[1:3]
    choices = []  # per candidate: the kernel size whose padding is spelled out, or None
    for c in convs:
        op = ops.parse_op(c.op_name)
        eigen = op_layers.eigen_depthwise_kernel_gradient(
            op.kernel_size, c.in_channels * op.expansion
        )
        choices.append(op.kernel_size if eigen and spatial_known else None)
    distinct = list(dict.fromkeys(choices))
    which = tf.constant([distinct.index(choice) for choice in choices], tf.int32)

    def kernel_gradient(x, k):
        # Taken in the forward: a tensor from outside a branch (``position``
        # under skip's tf.cond) is not reachable from the branch's gradient;
        # an intermediate of it is.
        index, sizes = tf.gather(which, position), tf.shape(k)

        def of_kernel(upstream):
            branches = [
                lambda size=size: op_layers.depthwise_filter_backprop(
                    x, upstream, sizes, stride, size
                )
                for size in distinct
            ]
            return _switch(index, branches)

        return of_kernel

    return op_layers.kernel_conv(y, kernel, stride, True, True, kernel_gradient)


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
    variables (through gathered handles; no gradient through them)."""
    for role, mean, variance in updates:
        layers = [c.op_layers[role] for c in convs]
        for name, value in (("moving_mean", mean), ("moving_variance", variance)):
            variables = [getattr(layer, name) for layer in layers]
            tf.raw_ops.AssignVariableOp(resource=gathered_handle(variables, position), value=value)
