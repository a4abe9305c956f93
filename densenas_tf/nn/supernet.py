"""The DenseNAS super network: mixed ops, dense blocks, and the supernet model.

Architecture parameters are three Keras variables kept apart from the weights:

- ``alpha_head`` (head layers x head ops): one row per head mixed layer, i.e.
  per edge into a searchable block, in ``SearchSpace.head_edges`` order;
- ``alpha_stack`` (stacking layers x stacking ops): one row per stacking mixed
  layer, in ``SearchSpace.stacking_layers`` order;
- ``beta`` (edges,): one entry per edge; block i's path probabilities are the
  softmax of its outgoing entries (``path_probabilities``).

Forward modes: ``all`` mixes every op by softmax(alpha); ``one`` runs one drawn
op per mixed layer; ``two`` runs two drawn ops mixed by the softmax over their
two alphas. In the sampled modes only the drawn ops are computed
(``tf.switch_case`` selects the branch inside one traced graph). Draws are
stateless: ``sample_ops(seed, policy)`` gives the same ops for the same seed
on every replica.
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from densenas_tf.nn import op_layers, switched_ops
from densenas_tf.nn.arch_params import (  # noqa: F401 (the supernet's API)
    MODES,
    SAMPLING_POLICIES,
    OpSample,
    op_weights,
    rebalance_alpha,
    sample_op_indices,
    segment_softmax,
)
from densenas_tf.space import ops
from densenas_tf.space.spaces import SearchSpace


class _CompiledCall:
    """Runs a layer's computation as a tf.function per training flag when the
    caller is eager on one device (the search steps): one graph per op, traced
    once, so each op's forward and backward run as graphs (fused kernels, no
    per-kernel Python dispatch) while the supernet still picks ops in Python.
    Under several replicas (cross-replica batch norm) and inside an outer
    tf.function the computation runs inline."""

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
        inline = not self.__dict__.get("compiled_ops", True)  # SuperNet.set_compiled_ops
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


WEIGHT_SHARING = ("none", "nested")


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


class CandidateOp(_CompiledCall, keras.layers.Layer):
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
            self.__dict__.get("switch_variables", True)
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


class ConvBNAct(_CompiledCall, keras.layers.Layer):
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


class SuperNet(keras.Model):
    """The whole super network of a search space, with its architecture parameters."""

    def __init__(
        self,
        space_config: dict[str, Any],
        bn_momentum: float = 0.9,
        synchronized_bn: bool = True,
        arch_init_std: float = 1e-3,
        arch_init_seed: int = 0,
        weight_sharing: str = "none",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.weight_sharing = weight_sharing
        self.space_config = dict(space_config)
        self.space = SearchSpace.from_config(space_config, source="SuperNet.space_config")
        self.bn_momentum = bn_momentum
        self.synchronized_bn = synchronized_bn
        self.arch_init_std = arch_init_std
        self.arch_init_seed = arch_init_seed
        space = self.space
        common = {"bn_momentum": bn_momentum, "synchronized_bn": synchronized_bn}

        self.stem_conv = ConvBNAct(
            space.stem.conv_width, 3, space.stem.stride, name="stem", **common
        )
        self.stem_op = CandidateOp(
            space.stem.op,
            space.stem.conv_width,
            space.stem.width,
            1,
            name="stem_op",
            **common,
        )
        self.dense_blocks = []
        for block in space.blocks[1:]:
            in_edges = space.in_edges(block.index)
            self.dense_blocks.append(
                DenseBlock(
                    [space.blocks[e.src].width for e in in_edges],
                    [e.stride for e in in_edges],
                    block.width,
                    block.stacking_layers,
                    list(space.head_ops),
                    list(space.stacking_ops),
                    name=f"block{block.index}",
                    weight_sharing=weight_sharing,
                    **common,
                )
            )
        self.final_convs = [
            ConvBNAct(space.final_conv_width, 1, 1, name=f"final_from{e.src}", **common)
            for e in space.final_edges
        ]
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.classifier = keras.layers.Dense(space.num_classes, name="classifier")

        init = keras.initializers.RandomNormal(stddev=arch_init_std, seed=arch_init_seed)
        self.alpha_head = self.add_weight(
            shape=(len(space.head_edges), len(space.head_ops)),
            initializer=init,
            name="alpha_head",
        )
        self.alpha_stack = self.add_weight(
            shape=(len(space.stacking_layers), len(space.stacking_ops)),
            initializer=keras.initializers.RandomNormal(
                stddev=arch_init_std, seed=arch_init_seed + 1
            ),
            name="alpha_stack",
        )
        self.beta = self.add_weight(
            shape=(len(space.edges),),
            initializer=keras.initializers.RandomNormal(
                stddev=arch_init_std, seed=arch_init_seed + 2
            ),
            name="beta",
        )

        # Static graph bookkeeping, as Python lists (never recomputed per step).
        self._edge_src = tf.constant([e.src for e in space.edges], dtype=tf.int32)

        def ids(values) -> np.ndarray:
            return np.asarray(list(values), dtype=np.int32)

        self._in_edge_ids = {
            b.index: ids(e.index for e in space.in_edges(b.index)) for b in space.blocks[1:]
        }
        self._head_rows = {
            b.index: ids(space.head_row(e) for e in space.in_edges(b.index))
            for b in space.blocks[1:]
        }
        self._stack_rows = {b.index: ids(space.stacking_rows(b.index)) for b in space.blocks[1:]}
        self._final_edge_ids = ids(e.index for e in space.final_edges)
        self._head_row_edges = ids(e.index for e in space.head_edges)
        self.build((None, *space.input_shape))

    # ----- variables ----------------------------------------------------------------
    @property
    def arch_variables(self) -> list:
        return [self.alpha_head, self.alpha_stack, self.beta]

    @property
    def weight_variables(self) -> list:
        arch_ids = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch_ids]

    def build(self, input_shape):
        space = self.space
        shape = tuple(input_shape)
        self.stem_conv.build(shape)
        shape = self.stem_conv.compute_output_shape(shape)
        self.stem_op.build(shape)
        shapes = {0: self.stem_op.compute_output_shape(shape)}
        for block, layer in zip(space.blocks[1:], self.dense_blocks):
            in_shapes = [shapes[e.src] for e in space.in_edges(block.index)]
            layer.build(in_shapes)
            shapes[block.index] = layer.compute_output_shape(in_shapes)
        for edge, conv in zip(space.final_edges, self.final_convs):
            conv.build(shapes[edge.src])
        self.classifier.build((None, space.final_conv_width))
        self.built = True

    def set_compiled_ops(self, enabled: bool) -> None:
        """Whether eager one-device calls run each op as its own traced graph
        (the default) or op by op in Python (for benchmarks and debugging)."""
        self.__dict__["compiled_ops"] = bool(enabled)
        for layer in self.compiled_layers():
            layer.__dict__["compiled_ops"] = bool(enabled)

    def compiled_layers(self) -> list[_CompiledCall]:
        """Every layer that runs as its own traced graph: the stem, each
        candidate op of every mixed layer, and the final convs."""
        layers: list[_CompiledCall] = [self.stem_conv, self.stem_op, *self.final_convs]
        for block in self.dense_blocks:
            for mixed in (*block.heads, *block.stacking):
                layers.extend(mixed.candidates)
        return layers

    def set_switched_variables(self, enabled: bool) -> None:
        """Whether a traced graph runs each mixed layer's drawn op as one MBConv
        on the drawn op's variables (``switched_ops``, the default) or switches
        between whole candidate ops (for benchmarks and tests)."""
        for block in self.dense_blocks:
            for mixed in (*block.heads, *block.stacking):
                mixed.__dict__["switch_variables"] = bool(enabled)

    def set_direct_forward(self, enabled: bool) -> None:
        """Whether eager one-device calls take the direct path (``_direct_call``,
        the default) or go layer by layer through DenseBlock and MixedOp (as in
        graphs and under several replicas; for benchmarks and tests)."""
        self.__dict__["direct_forward"] = bool(enabled)

    def weight_draw_keys(self) -> list[tuple[str, int, tuple[int, ...]] | None]:
        """For each of ``weight_variables``: when a weight step that draws one op
        per layer uses it. ``(kind, row, ops)``: when row ``row`` of
        ``kind`` ("head" or "stack") drew one of ``ops`` (a candidate's own
        weights: its op; nested shared kernels: every MBConv op of the layer);
        None: every step (stem, final convs, classifier)."""
        owners: dict[int, tuple[str, int, tuple[int, ...]]] = {}
        space = self.space
        for block, layer in zip(space.blocks[1:], self.dense_blocks):
            j = block.index
            mixed_rows = [("head", r, m) for r, m in zip(self._head_rows[j], layer.heads)]
            mixed_rows += [("stack", r, m) for r, m in zip(self._stack_rows[j], layer.stacking)]
            for kind, row, mixed in mixed_rows:
                convs = tuple(k for k, c in enumerate(mixed.candidates) if c.op_layers)
                if mixed.shared is not None:
                    for v in mixed.shared.trainable_variables:
                        owners[id(v)] = (kind, int(row), convs)
                for k, candidate in enumerate(mixed.candidates):
                    for v in candidate.trainable_variables:
                        owners[id(v)] = (kind, int(row), (k,))
        return [owners.get(id(v)) for v in self.weight_variables]

    # ----- probabilities and sampling -------------------------------------------------
    def path_probabilities(self) -> tf.Tensor:
        """p_{i->j} for every edge: softmax of beta over each block's outgoing edges."""
        return segment_softmax(
            tf.convert_to_tensor(self.beta), self._edge_src, self.space.num_blocks
        )

    def sample_ops(self, seed, policy: str) -> OpSample:
        """Draws op indices for every mixed layer from a stateless seed (shape [2]).

        ``uniform``: one op, uniformly; ``softmax``: one op by softmax(alpha);
        ``two``: two distinct ops by softmax(alpha) (without replacement).
        """
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        head = sample_op_indices(tf.convert_to_tensor(self.alpha_head), seeds[0], policy)
        stack = sample_op_indices(tf.convert_to_tensor(self.alpha_stack), seeds[1], policy)
        return OpSample(head, stack)

    # ----- forward --------------------------------------------------------------------
    def call(
        self,
        images,
        training=None,
        mode="all",
        sample: OpSample | None = None,
        weight_gradients: bool = True,
    ):
        """Logits of images. ``weight_gradients=False`` (the architecture step)
        makes the convolutions pass gradients to their inputs only: the weights'
        gradients, which that step never uses, are not computed."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes are {MODES}")
        if mode != "all" and sample is None:
            raise ValueError(f"mode {mode!r} needs a sample from sample_ops()")
        # Under a mixed policy the layers compute in float16 while alpha, beta
        # and every softmax over them stay float32; logits come back float32.
        images = tf.cast(images, self.compute_dtype)
        kwargs = {"training": training, "weight_gradients": weight_gradients}
        eager_one_device = tf.executing_eagerly() and op_layers.replicas_in_sync() == 1
        if mode == "all" and eager_one_device and self.__dict__.get("graph_forward_all", True):
            return self._forward_all_graph(bool(training), bool(weight_gradients))(images)
        if (
            self.__dict__.get("direct_forward", True)
            and self.__dict__.get("compiled_ops", True)
            and eager_one_device
        ):
            return self._direct_call(images, mode, sample, **kwargs)
        return self._layered_call(images, mode, sample, **kwargs)

    def _forward_all_graph(self, training: bool, weight_gradients: bool):
        """The all-ops forward (every op of every layer mixed by softmax(alpha))
        as one traced graph per flag pair, made on first use: no switch to
        trace, and no per-op dispatch from Python."""
        graphs = self.__dict__.setdefault("_forward_all_graphs", {})
        key = (training, weight_gradients)
        if key not in graphs:
            graphs[key] = tf.function(
                functools.partial(
                    self._layered_call,
                    mode="all",
                    sample=None,
                    training=training,
                    weight_gradients=weight_gradients,
                ),
                autograph=False,
            )
        return graphs[key]

    def set_graph_forward_all(self, enabled: bool) -> None:
        """Whether an eager one-device all-ops forward runs as one traced graph
        (the default) or as the eager forward does (for benchmarks)."""
        self.__dict__["graph_forward_all"] = bool(enabled)

    def _layered_call(self, images, mode, sample, training, weight_gradients):
        """The forward layer by layer through DenseBlock and MixedOp (graphs,
        several replicas, and the traced steps)."""
        space = self.space
        kwargs = {"training": training, "weight_gradients": weight_gradients}
        x = self.stem_conv(images, **kwargs)
        outputs = {0: self.stem_op(x, **kwargs)}
        probs = self.path_probabilities()
        alpha_head = tf.convert_to_tensor(self.alpha_head)
        alpha_stack = tf.convert_to_tensor(self.alpha_stack)

        def rows(drawn, indices):
            drawn = known_draw(drawn)
            if isinstance(drawn, np.ndarray):
                return drawn[indices]
            return None if drawn is None else tf.gather(drawn, indices)

        for block, layer in zip(space.blocks[1:], self.dense_blocks):
            j = block.index
            head_rows, stack_rows = self._head_rows[j], self._stack_rows[j]
            outputs[j] = layer(
                [outputs[e.src] for e in space.in_edges(j)],
                tf.gather(probs, self._in_edge_ids[j]),
                tf.gather(alpha_head, head_rows),
                tf.gather(alpha_stack, stack_rows),
                rows(None if sample is None else sample.head, head_rows),
                rows(None if sample is None else sample.stack, stack_rows),
                mode=mode,
                **kwargs,
            )
        # The final node re-normalises its incoming path probabilities (softmax),
        # as the reference implementation does.
        final_weights = tf.nn.softmax(tf.gather(probs, self._final_edge_ids))
        y = None
        for k, (edge, conv) in enumerate(zip(space.final_edges, self.final_convs)):
            out = conv(outputs[edge.src], **kwargs)
            term = tf.cast(final_weights[k], out.dtype) * out
            y = term if y is None else y + term
        return tf.cast(self.classifier(self.pool(y)), tf.float32)

    def _direct_call(self, images, mode, sample, training, weight_gradients):
        """The eager one-device forward (the search steps): the same sums as the
        layer-by-layer path, with the Python-side glue cut to a few ops per
        step. Every op output's coefficient (path probability x op weight for
        heads, op weight for stacking layers) is computed for all layers in one
        go and unstacked once; each drawn op then runs as one traced graph that
        also applies its coefficient, and each layer's terms are summed by one
        AddN. Draws are read to the host once per step."""
        space = self.space
        kwargs = {"training": training, "weight_gradients": weight_gradients}
        dtype = self.compute_dtype
        probs = self.path_probabilities()
        alpha_head = tf.convert_to_tensor(self.alpha_head)
        alpha_stack = tf.convert_to_tensor(self.alpha_stack)
        head_p = tf.gather(probs, self._head_row_edges)[:, None]
        rows_h, rows_s = alpha_head.shape[0], alpha_stack.shape[0]
        if mode == "all":
            head_ops = np.tile(np.arange(len(space.head_ops)), (rows_h, 1))
            stack_ops = np.tile(np.arange(len(space.stacking_ops)), (rows_s, 1))
            head_coef = tf.nn.softmax(alpha_head, axis=-1) * head_p
            stack_coef = tf.nn.softmax(alpha_stack, axis=-1)
        elif mode == "two":
            head_ops, stack_ops = np.asarray(sample.head), np.asarray(sample.stack)
            head_coef = tf.nn.softmax(tf.gather(alpha_head, sample.head, batch_dims=1)) * head_p
            stack_coef = tf.nn.softmax(tf.gather(alpha_stack, sample.stack, batch_dims=1))
        else:  # one: the stacking layers' single op has weight 1
            head_ops = np.asarray(sample.head).reshape(rows_h, 1)
            stack_ops = np.asarray(sample.stack).reshape(rows_s, 1)
            head_coef, stack_coef = head_p, None

        def scalars(coef):
            return tf.unstack(tf.reshape(tf.cast(coef, dtype), [-1])) if coef.shape[0] else []

        head_w, stack_w = scalars(head_coef), (None if stack_coef is None else scalars(stack_coef))
        per_h, per_s = head_ops.shape[1], stack_ops.shape[1]

        def add(terms):
            return terms[0] if len(terms) == 1 else tf.add_n(terms)

        x = self.stem_conv(images, **kwargs)
        outputs = {0: self.stem_op(x, **kwargs)}
        for block, layer in zip(space.blocks[1:], self.dense_blocks):
            j = block.index
            terms = []
            for edge, head, row in zip(space.in_edges(j), layer.heads, self._head_rows[j]):
                for t, op in enumerate(head_ops[row]):
                    terms.append(
                        head.candidates[op].run_scaled(
                            outputs[edge.src], head_w[row * per_h + t], **kwargs
                        )
                    )
            y = add(terms)
            for mixed, row in zip(layer.stacking, self._stack_rows[j]):
                if stack_w is None:
                    y = mixed.candidates[stack_ops[row, 0]].call(y, **kwargs)
                    continue
                y = add(
                    [
                        mixed.candidates[op].run_scaled(y, stack_w[row * per_s + t], **kwargs)
                        for t, op in enumerate(stack_ops[row])
                    ]
                )
            outputs[j] = y
        final_w = tf.unstack(tf.cast(tf.nn.softmax(tf.gather(probs, self._final_edge_ids)), dtype))
        y = add(
            [
                conv.run_scaled(outputs[edge.src], final_w[k], **kwargs)
                for k, (edge, conv) in enumerate(zip(space.final_edges, self.final_convs))
            ]
        )
        return tf.cast(self.classifier(self.pool(y)), tf.float32)

    def latency_weights(self, mode: str = "all", sample: OpSample | None = None):
        """(head op weights, stacking op weights, path probabilities) of a forward
        mode, the inputs of ExpectedLatency: differentiable in alpha and beta."""
        head = op_weights(
            tf.convert_to_tensor(self.alpha_head), mode, None if sample is None else sample.head
        )
        stack = op_weights(
            tf.convert_to_tensor(self.alpha_stack), mode, None if sample is None else sample.stack
        )
        return head, stack, self.path_probabilities()

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "space_config": dict(self.space_config),
            "bn_momentum": self.bn_momentum,
            "synchronized_bn": self.synchronized_bn,
            "arch_init_std": self.arch_init_std,
            "arch_init_seed": self.arch_init_seed,
            "weight_sharing": self.weight_sharing,
        }

    @classmethod
    def from_space(cls, space: SearchSpace, **kwargs) -> SuperNet:
        return cls(space.to_config(), **kwargs)

    def arch_numpy(self) -> dict[str, np.ndarray]:
        """Current architecture parameters as NumPy arrays (for derivation)."""
        return {
            "alpha_head": np.asarray(self.alpha_head.numpy()),
            "alpha_stack": np.asarray(self.alpha_stack.numpy()),
            "beta": np.asarray(self.beta.numpy()),
        }
