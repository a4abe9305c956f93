"""The DenseNAS super network: the supernet model over a space's dense blocks
(``nn.mixed``), its architecture parameters and forward modes.

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

import dataclasses
import functools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from densenas_tf.nn import op_layers
from densenas_tf.nn.arch_params import (  # noqa: F401 (the supernet's API)
    MODES,
    SAMPLING_POLICIES,
    OpSample,
    op_weights,
    rebalance_alpha,
    sample_op_indices,
    segment_softmax,
)
from densenas_tf.nn.mixed import (
    CandidateOp,
    CompiledCall,
    ConvBNAct,
    DenseBlock,
    Execution,
    known_draw,
)
from densenas_tf.space.spaces import SearchSpace


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
        execution: Execution | dict[str, bool] | None = None,
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
        if isinstance(execution, dict):  # from get_config
            execution = Execution(**execution)
        self.execution = execution or Execution()

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

    @property
    def execution(self) -> Execution:
        """How the supernet runs (:class:`Execution`); assign to change it."""
        return self._execution

    @execution.setter
    def execution(self, value: Execution) -> None:
        if not isinstance(value, Execution):
            raise TypeError(f"execution must be an Execution, got {type(value).__name__}")
        self._execution = value
        for layer in self.compiled_layers():
            layer.execution = value
        for block in self.dense_blocks:
            for mixed in (*block.heads, *block.stacking):
                mixed.execution = value

    def compiled_layers(self) -> list[CompiledCall]:
        """Every layer that runs as its own traced graph: the stem, each
        candidate op of every mixed layer, and the final convs."""
        layers: list[CompiledCall] = [self.stem_conv, self.stem_op, *self.final_convs]
        for block in self.dense_blocks:
            for mixed in (*block.heads, *block.stacking):
                layers.extend(mixed.candidates)
        return layers

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
        execution = self.execution
        if mode == "all" and eager_one_device and execution.graph_forward_all:
            return self._forward_all_graph(bool(training), bool(weight_gradients))(images)
        if execution.direct_forward and execution.compiled_ops and eager_one_device:
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

    def path_call(
        self,
        images,
        path: tuple[int, ...],
        head_choice: dict[int, int],
        stack_choice: dict[int, int],
        training: bool = True,
        weight_gradients: bool = False,
    ):
        """Logits of one net of the space run on the supernet's shared weights:
        only its path (the chosen head on each edge, then the entered block's
        stacking layers, then the final conv from the last block) with one op
        per layer (``head_choice`` / ``stack_choice``: op index by alpha row).
        Nothing is weighted by alpha or beta and no other block runs. With
        ``training`` the batch norms use the batch's statistics (and update
        their moving ones); without, their moving statistics from the search,
        which are those of the mixture, not of this net. ``weight_gradients``:
        the ops give their kernels gradients (to train the net on them)."""
        space = self.space
        if path[0] != 0 or path[-1] != space.final_node:
            raise ValueError(f"a path runs from block 0 to node {space.final_node}, got {path}")
        kwargs = {"training": training, "weight_gradients": weight_gradients}
        x = self.stem_op(self.stem_conv(tf.cast(images, self.compute_dtype), **kwargs), **kwargs)
        for src, dst in zip(path[:-1], path[1:]):
            edge = space.edge(src, dst)
            if dst == space.final_node:
                k = [e.index for e in space.final_edges].index(edge.index)
                x = self.final_convs[k](x, **kwargs)
                break
            layer = self.dense_blocks[dst - 1]
            k = [e.index for e in space.in_edges(dst)].index(edge.index)
            head = layer.heads[k].candidates[head_choice[space.head_row(edge)]]
            x = head.call(x, **kwargs)
            for mixed, row in zip(layer.stacking, space.stacking_rows(dst)):
                x = mixed.candidates[stack_choice[row]].call(x, **kwargs)
        return tf.cast(self.classifier(self.pool(x)), tf.float32)

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
            "execution": dataclasses.asdict(self.execution),
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
