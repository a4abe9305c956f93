"""The supernet's layers: candidate ops, mixed ops, dense blocks, and how they run.

A mixed layer (``MixedOp``) holds one ``CandidateOp`` per op of the space's
list, on one input; a ``DenseBlock`` holds a head mixed layer per incoming
edge and its stacking mixed layers. In the sampled modes only the drawn ops
are computed: eagerly each drawn op runs alone (as its own traced graph,
``Execution.compiled_ops``), in a traced graph the drawn op is picked by a
switch or run as one MBConv on the drawn op's variables (``switched_ops``).
``Execution`` holds those choices; every choice computes the same function.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from densenas_tf.nn import op_layers, switched_ops
from densenas_tf.nn.arch_params import MODES
from densenas_tf.space import ops
from densenas_tf.space.ops import WEIGHT_SHARING


@dataclasses.dataclass(frozen=True)
class Execution:
    """How the supernet runs; every choice computes the same function. The
    defaults are the fast ones; the others exist to measure and test them.

    - ``compiled_ops``: eager one-device calls run each op as its own traced
      graph (False: op by op in Python).
    - ``direct_forward``: eager one-device calls take the direct path
      (``SuperNet._direct_call``; False: layer by layer through DenseBlock and
      MixedOp, as graphs and several replicas do).
    - ``graph_forward_all``: an eager one-device all-ops forward runs as one
      traced graph (False: as the eager forward does).
    - ``switched_variables``: a traced graph runs each mixed layer's drawn op
      as one MBConv on the drawn op's variables (``switched_ops``; False: it
      switches between whole candidate ops).
    """

    compiled_ops: bool = True
    direct_forward: bool = True
    graph_forward_all: bool = True
    switched_variables: bool = True


class CompiledCall:
    """Runs a layer's computation as a tf.function per training flag when the
    caller is eager on one device (the search steps): one graph per op, traced
    once, so each op's forward and backward run as graphs (fused kernels, no
    per-kernel Python dispatch) while the supernet still picks ops in Python.
    Under several replicas (cross-replica batch norm) and inside an outer
    tf.function the computation runs inline."""

    execution = Execution()  # set by SuperNet.execution

    def _compute(self, x, training, weight_gradients):
        raise NotImplementedError

    def _graph(self, compute, training, weight_gradients):
        """The traced graph of ``compute`` (``_compute`` or ``_compute_scaled``)
        for one (training, weight_gradients) pair, made on first use."""
        key = (compute.__name__, bool(training), bool(weight_gradients))
        compiled = self.__dict__.setdefault("_compiled_fns", {})
        if key not in compiled:
            # A partial (not a lambda) so TensorFlow counts each op's traces apart
            # and does not warn about "retracing" when hundreds of ops trace once.
            compiled[key] = tf.function(
                functools.partial(compute, training=key[1], weight_gradients=key[2]),
                autograph=False,
                reduce_retracing=True,
            )
        return compiled[key]

    def _run_compiled(self, x, training, weight_gradients=True):
        inline = not self.execution.compiled_ops
        if inline or not tf.executing_eagerly() or op_layers.replicas_in_sync() > 1:
            return self._compute(x, training, weight_gradients)
        return self._graph(self._compute, training, weight_gradients)(x)

    def _compute_scaled(self, x, scale, training, weight_gradients):
        return scale * self._compute(x, training, weight_gradients)

    def run_scaled(self, x, scale, training=None, weight_gradients=True):
        """``scale * layer(x)`` as one traced graph (scale: a scalar tensor of
        x's dtype): the supernet's eager one-device forward, where every op's
        output is weighted by its op weight and path probability."""
        return self._graph(self._compute_scaled, training, weight_gradients)(x, scale)


def known_draw(drawn):
    """A draw (op indices) as NumPy when its value is known, eagerly or while
    tracing (a constant), so that its rows and elements stay known and each
    mixed layer builds its drawn op only; else the tensor as given (None: None).
    Keras hands a layer's NumPy call arguments over as tensors, and slicing a
    constant tensor in a graph loses its known value: so the supernet, each
    DenseBlock and each MixedOp recover it before slicing."""
    if drawn is None or isinstance(drawn, (int, np.integer, np.ndarray)):
        return drawn
    value = tf.get_static_value(drawn)
    return drawn if value is None else np.asarray(value)


class NestedKernels(keras.layers.Layer):
    """The convolution kernels that a mixed layer's MBConv candidates share
    (``weight_sharing: nested``, as in Single-Path NAS and Once-for-All).

    One expansion kernel (C_in -> C_in * largest expansion), one depthwise
    kernel of the largest size and one projection kernel; an op of kernel k and
    expansion e uses the centre k x k of the depthwise kernel and the first
    C_in * e hidden channels of all three. Every draw of any op then trains
    weights that the other ops use too, which is what lets a one-op-per-step
    supernet learn in a CPU budget. Each op keeps its own batch norms.
    """

    def __init__(self, op_names: list[str], in_channels: int, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        convs = [ops.parse_op(name) for name in op_names]
        convs = [op for op in convs if not op.is_skip]
        if not convs:
            raise ValueError(f"nested weight sharing needs an MBConv op, got {op_names}")
        self.op_names = list(op_names)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.max_kernel = max(op.kernel_size for op in convs)
        self.max_hidden = in_channels * max(op.expansion for op in convs)
        self.expands = any(op.expansion != 1 for op in convs)

    def build(self, input_shape=None):
        init = "glorot_uniform"
        if self.expands:
            self.expand_kernel = self.add_weight(
                shape=(1, 1, self.in_channels, self.max_hidden),
                initializer=init,
                name="expand_kernel",
            )
        self.dw_kernel = self.add_weight(
            shape=(self.max_kernel, self.max_kernel, self.max_hidden, 1),
            initializer=init,
            name="dw_kernel",
        )
        self.project_kernel = self.add_weight(
            shape=(1, 1, self.max_hidden, self.out_channels),
            initializer=init,
            name="project_kernel",
        )
        self.built = True

    def slices(self, op_name: str) -> dict[str, tf.Tensor]:
        """The kernels of one op: ``expand`` (when its expansion is not 1), ``dw``, ``project``."""
        op = ops.parse_op(op_name)
        hidden = self.in_channels * op.expansion
        start = (self.max_kernel - op.kernel_size) // 2
        stop = start + op.kernel_size
        kernels = {
            "dw": self.dw_kernel[start:stop, start:stop, :hidden, :],
            "project": self.project_kernel[:, :, :hidden, :],
        }
        if op.expansion != 1:
            kernels["expand"] = self.expand_kernel[:, :, :, :hidden]
        return kernels

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "op_names": list(self.op_names),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
        }


class CandidateOp(CompiledCall, keras.layers.Layer):
    """One candidate op (an MBConv or skip) built from the registry's layers."""

    def __init__(
        self,
        op_name: str,
        in_channels: int,
        out_channels: int,
        stride: int,
        bn_momentum: float = 0.9,
        synchronized_bn: bool = True,
        shared: NestedKernels | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.op_name = op_name
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.bn_momentum = bn_momentum
        self.synchronized_bn = synchronized_bn
        layers = op_layers.make_op_layers(
            op_name,
            in_channels,
            out_channels,
            stride,
            name=self.name,
            bn_momentum=bn_momentum,
            synchronized_bn=synchronized_bn,
        )
        if shared is not None and layers:
            # Nested sharing: the convolutions' kernels are slices of the mixed
            # layer's shared kernels; the batch norms stay this op's own. Kept out
            # of Keras's tracking: the mixed layer owns the shared variables.
            self.__dict__["_shared"] = shared
            layers = {k: v for k, v in layers.items() if k.endswith("_bn")}
        self.op_layers = layers

    @property
    def shared(self) -> NestedKernels | None:
        return self.__dict__.get("_shared")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.shared is not None:
            hidden = self.in_channels * ops.parse_op(self.op_name).expansion
            for role, width in (
                ("expand_bn", hidden),
                ("dw_bn", hidden),
                ("project_bn", self.out_channels),
            ):
                if role in self.op_layers:
                    self.op_layers[role].build((*shape[:-1], width))
            self.built = True
            return
        for key in op_layers.WEIGHTED_ROLES:
            if key in self.op_layers:
                self.op_layers[key].build(shape)
                shape = self.op_layers[key].compute_output_shape(shape)
        self.built = True

    def _compute(self, x, training, weight_gradients):
        if self.shared is None:
            return op_layers.apply_op_layers(
                self.op_layers, x, training=training, direct=True, weight_gradients=weight_gradients
            )
        kernels = self.shared.slices(self.op_name)
        layers = self.op_layers
        y = x
        if "expand_bn" in layers:
            y = op_layers.kernel_conv(y, kernels["expand"], 1, False, weight_gradients)
            y = tf.nn.relu6(op_layers.fused_batch_norm(layers["expand_bn"], y, training))
        y = op_layers.kernel_conv(y, kernels["dw"], self.stride, True, weight_gradients)
        y = tf.nn.relu6(op_layers.fused_batch_norm(layers["dw_bn"], y, training))
        y = op_layers.kernel_conv(y, kernels["project"], 1, False, weight_gradients)
        y = op_layers.fused_batch_norm(layers["project_bn"], y, training)
        if ops.has_residual(self.in_channels, self.out_channels, self.stride):
            y = x + y
        return y

    def call(self, x, training=None, weight_gradients=True):
        if not self.op_layers:  # skip
            return x
        return self._run_compiled(x, training, weight_gradients)

    def run_scaled(self, x, scale, training=None, weight_gradients=True):
        if not self.op_layers:  # skip
            return scale * x
        return super().run_scaled(x, scale, training, weight_gradients)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        out = None if h is None else -(-h // self.stride)
        return (n, out, out if w is not None else None, self.out_channels)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "op_name": self.op_name,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "stride": self.stride,
            "bn_momentum": self.bn_momentum,
            "synchronized_bn": self.synchronized_bn,
        }


class MixedOp(keras.layers.Layer):
    """A searchable layer: candidate ops on one input, mixed or sampled.

    ``call(x, alpha, sample, mode)``: alpha is this layer's row of
    architecture parameters; sample is a scalar op index (mode ``one``) or a
    pair of distinct indices (mode ``two``).
    """

    execution = Execution()  # set by SuperNet.execution

    def __init__(
        self,
        op_names: list[str],
        in_channels: int,
        out_channels: int,
        stride: int,
        bn_momentum: float = 0.9,
        synchronized_bn: bool = True,
        weight_sharing: str = "none",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if weight_sharing not in WEIGHT_SHARING:
            raise ValueError(
                f"unknown weight_sharing {weight_sharing!r}; the choices are {WEIGHT_SHARING}"
            )
        self.op_names = list(op_names)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.bn_momentum = bn_momentum
        self.synchronized_bn = synchronized_bn
        self.weight_sharing = weight_sharing
        convs = [op for op in self.op_names if not ops.parse_op(op).is_skip]
        self.shared = (
            NestedKernels(convs, in_channels, out_channels, name=f"{self.name}_shared")
            if weight_sharing == "nested" and len(convs) > 1
            else None
        )
        self.candidates = [
            CandidateOp(
                op,
                in_channels,
                out_channels,
                stride,
                bn_momentum=bn_momentum,
                synchronized_bn=synchronized_bn,
                shared=self.shared,
                name=f"{self.name}_{op}",
            )
            for op in self.op_names
        ]

    def build(self, input_shape):
        if self.shared is not None:
            self.shared.build(input_shape)
        for candidate in self.candidates:
            candidate.build(input_shape)
        self.built = True

    def _run(self, index, x, training, weight_gradients=True):
        kwargs = {"training": training, "weight_gradients": weight_gradients}
        static = tf.get_static_value(index)
        if static is not None:
            # Eager, or a draw known while tracing: nothing but the drawn op is
            # built or run.
            return self.candidates[int(static)](x, **kwargs)
        if (
            self.execution.switched_variables
            and op_layers.replicas_in_sync() == 1
            and switched_ops.switchable(self)
        ):
            # One MBConv in the graph, run on the drawn op's variables.
            return switched_ops.run_drawn(self, index, x, training, weight_gradients)
        branches = [lambda c=c: c(x, **kwargs) for c in self.candidates]
        return tf.switch_case(index, branches)

    def call(self, x, alpha, sample=None, mode="all", training=None, weight_gradients=True):
        sample = known_draw(sample)
        if mode == "all":
            weights = tf.cast(tf.nn.softmax(alpha), x.dtype)
            outputs = [
                c(x, training=training, weight_gradients=weight_gradients) for c in self.candidates
            ]
            return tf.add_n([weights[k] * y for k, y in enumerate(outputs)])
        if mode == "one":
            return self._run(sample, x, training, weight_gradients)
        if mode == "two":
            # The softmax in float32; only the products run in the compute dtype.
            weights = tf.cast(tf.nn.softmax(tf.gather(alpha, sample)), x.dtype)
            first = self._run(sample[0], x, training, weight_gradients)
            second = self._run(sample[1], x, training, weight_gradients)
            return weights[0] * first + weights[1] * second
        raise ValueError(f"unknown mode {mode!r}; modes are {MODES}")

    def compute_output_shape(self, input_shape):
        return self.candidates[0].compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "op_names": list(self.op_names),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "stride": self.stride,
            "bn_momentum": self.bn_momentum,
            "synchronized_bn": self.synchronized_bn,
            "weight_sharing": self.weight_sharing,
        }


class DenseBlock(keras.layers.Layer):
    """A block: one head mixed op per incoming edge, summed with the edges'
    path probabilities (eq. 4), then the stacking mixed layers."""

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        out_channels: int,
        num_stacking_layers: int,
        head_ops: list[str],
        stacking_ops: list[str],
        bn_momentum: float = 0.9,
        synchronized_bn: bool = True,
        weight_sharing: str = "none",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(in_channels) != len(strides) or not in_channels:
            raise ValueError(
                f"in_channels {in_channels} and strides {strides} must be non-empty and of equal length"
            )
        self.in_channels = list(in_channels)
        self.strides = list(strides)
        self.out_channels = out_channels
        self.num_stacking_layers = num_stacking_layers
        self.head_ops = list(head_ops)
        self.stacking_ops = list(stacking_ops)
        self.bn_momentum = bn_momentum
        self.synchronized_bn = synchronized_bn
        self.weight_sharing = weight_sharing
        common = {
            "bn_momentum": bn_momentum,
            "synchronized_bn": synchronized_bn,
            "weight_sharing": weight_sharing,
        }
        self.heads = [
            MixedOp(
                self.head_ops,
                cin,
                out_channels,
                s,
                name=f"{self.name}_head{k}",
                **common,
            )
            for k, (cin, s) in enumerate(zip(self.in_channels, self.strides))
        ]
        self.stacking = [
            MixedOp(
                self.stacking_ops,
                out_channels,
                out_channels,
                1,
                name=f"{self.name}_l{k}",
                **common,
            )
            for k in range(num_stacking_layers)
        ]

    def build(self, input_shape):
        for head, shape in zip(self.heads, input_shape):
            head.build(shape)
        shape = self.heads[0].compute_output_shape(input_shape[0])
        for layer in self.stacking:
            layer.build(shape)
        self.built = True

    def call(
        self,
        inputs,
        path_probs,
        alpha_head,
        alpha_stack,
        head_sample=None,
        stack_sample=None,
        mode="all",
        training=None,
        weight_gradients=True,
    ):
        kwargs = {"training": training, "weight_gradients": weight_gradients}
        head_sample, stack_sample = known_draw(head_sample), known_draw(stack_sample)
        x = None
        for k, head in enumerate(self.heads):
            sample = None if head_sample is None else head_sample[k]
            y = head(inputs[k], alpha_head[k], sample, mode=mode, **kwargs)
            y = tf.cast(path_probs[k], y.dtype) * y
            x = y if x is None else x + y
        for k, layer in enumerate(self.stacking):
            sample = None if stack_sample is None else stack_sample[k]
            x = layer(x, alpha_stack[k], sample, mode=mode, **kwargs)
        return x

    def compute_output_shape(self, input_shape):
        return self.heads[0].compute_output_shape(input_shape[0])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "in_channels": list(self.in_channels),
            "strides": list(self.strides),
            "out_channels": self.out_channels,
            "num_stacking_layers": self.num_stacking_layers,
            "head_ops": list(self.head_ops),
            "stacking_ops": list(self.stacking_ops),
            "bn_momentum": self.bn_momentum,
            "synchronized_bn": self.synchronized_bn,
            "weight_sharing": self.weight_sharing,
        }


class ConvBNAct(CompiledCall, keras.layers.Layer):
    """Conv, BN, ReLU6: the stem conv and each input of the final 1x1-conv node."""

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        stride: int = 1,
        bn_momentum: float = 0.9,
        synchronized_bn: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.bn_momentum = bn_momentum
        self.synchronized_bn = synchronized_bn
        self.op_layers = op_layers.make_conv_bn_act_layers(
            filters, kernel_size, stride, self.name, bn_momentum, synchronized_bn
        )

    def build(self, input_shape):
        self.op_layers["conv"].build(tuple(input_shape))
        shape = self.op_layers["conv"].compute_output_shape(tuple(input_shape))
        self.op_layers["bn"].build(shape)
        self.built = True

    def _compute(self, x, training, weight_gradients):
        return op_layers.apply_conv_bn_act(
            self.op_layers, x, training=training, direct=True, weight_gradients=weight_gradients
        )

    def call(self, x, training=None, weight_gradients=True):
        return self._run_compiled(x, training, weight_gradients)

    def compute_output_shape(self, input_shape):
        return self.op_layers["conv"].compute_output_shape(tuple(input_shape))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "bn_momentum": self.bn_momentum,
            "synchronized_bn": self.synchronized_bn,
        }
