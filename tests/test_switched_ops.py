"""switched_ops: one MBConv per mixed layer on the drawn op's variables, in
traced graphs, against the switch over whole candidate ops."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from densenas_tf.nn import switched_ops
from densenas_tf.nn.mixed import Execution, MixedOp

OPS = ["mbconv_k3_e3", "mbconv_k5_e6", "mbconv_k7_e3", "skip"]


def _layer(weight_sharing: str, op_names=OPS, stride: int = 1, cin: int = 8, cout: int = 8):
    layer = MixedOp(op_names, cin, cout, stride, weight_sharing=weight_sharing, name="m")
    layer.build((None, 10, 10, cin))
    rng = np.random.default_rng(3)
    for v in layer.variables:  # statistics away from 0 and 1, so a mix-up shows
        shift = 0.5 if "variance" in v.path else 0.0
        v.assign(np.abs(rng.normal(size=v.shape)) + shift if shift else rng.normal(size=v.shape))
    return layer


def _run(layer, switched: bool, index: int, x, training: bool, weight_gradients: bool = True):
    """Output, gradients (input and every variable) and batch-norm statistics
    after one traced call of the layer with op ``index``."""
    layer.execution = Execution(switched_variables=switched)
    start = [v.numpy() for v in layer.variables]

    @tf.function(autograph=False)
    def step(x, index):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(
                x,
                tf.zeros([len(layer.op_names)]),
                index,
                mode="one",
                training=training,
                weight_gradients=weight_gradients,
            )
            loss = tf.reduce_sum(y * tf.cos(y))
        return y, tape.gradient(loss, [x, *layer.trainable_variables])

    y, grads = step(x, tf.constant(index))
    after = [v.numpy() for v in layer.variables]
    for v, value in zip(layer.variables, start):
        v.assign(value)
    grads = [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]
    return y.numpy(), grads, after, step


@pytest.mark.slow
@pytest.mark.parametrize("weight_sharing", ["none", "nested"])
@pytest.mark.parametrize("stride,cout", [(1, 8), (2, 12)])
def test_switched_layer_computes_what_the_op_branches_compute(weight_sharing, stride, cout):
    ops = OPS if stride == 1 else OPS[:3]  # skip needs stride 1 and equal widths
    layer = _layer(weight_sharing, ops, stride=stride, cout=cout)
    assert switched_ops.switchable(layer)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 10, 10, 8)), tf.float32)
    for index in range(len(ops)):
        for training in (True, False):
            mine = _run(layer, True, index, x, training)
            theirs = _run(layer, False, index, x, training)
            np.testing.assert_allclose(mine[0], theirs[0], rtol=1e-5, atol=1e-5)
            assert len(mine[1]) == len(theirs[1])
            for a, b in zip(mine[1], theirs[1]):
                if b is None or not np.any(b):
                    # Untaken ops: no gradient or zeros, on both paths.
                    assert a is None or not np.any(a)
                else:
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
            for a, b, v in zip(mine[2], theirs[2], layer.variables):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=v.path)
            if training and ops[index] != "skip":
                # The drawn op's statistics moved; no other op's did.
                moved = {
                    v.path
                    for v, a, s in zip(
                        layer.variables, mine[2], [w.numpy() for w in layer.variables]
                    )
                    if not np.array_equal(a, s)
                }
                assert moved and all(f"_{ops[index]}_" in p for p in moved), moved


@pytest.mark.slow
def test_switched_layer_holds_one_mbconv():
    """The traced graph holds the expansion and projection convolutions and the
    batch norms once, not once per candidate op."""
    layer = _layer("none")
    x = tf.zeros((2, 10, 10, 8))

    def count(switched):
        *_, step = _run(layer, switched, 0, x, True)
        graph = step.get_concrete_function(x, tf.constant(0)).graph.as_graph_def()
        nodes = [n for f in graph.library.function for n in f.node_def] + list(graph.node)
        return sum(n.op == "FusedBatchNormV3" for n in nodes)

    # Forward-with-intermediates copies of the branches aside: 3 batch norms
    # per MBConv candidate (3 of them) against 3 for the one MBConv.
    assert count(False) >= 3 * count(True)


def test_layers_the_switch_cannot_run_take_the_op_branches():
    assert not switched_ops.switchable(_layer("none", ["mbconv_k3_e3", "skip"]))
    assert not switched_ops.switchable(_layer("none", ["mbconv_k3_e1", "mbconv_k3_e3"]))
    layer = _layer("none", ["mbconv_k3_e1", "mbconv_k5_e3"])
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 10, 10, 8)), tf.float32)
    y, *_ = _run(layer, True, 1, x, True)
    assert y.shape == (2, 10, 10, 8)


def _recorded_or_stacked(layer, recorded: bool, draws, x):
    """Variables and momentum buffers after SGD steps with the given draws: the
    recorded path (gradients of the drawn op's copied-out weights, applied by
    the optimizer's switch) or the stacked path (gradients of every variable,
    the undrawn ops' zero and gated off by their draw flags)."""
    import contextlib

    from densenas_tf.nn.optimizers import MomentumSGD

    start = [v.numpy() for v in layer.variables]
    layer.execution = Execution(switched_variables=True)
    variables = layer.trainable_variables
    owner = {id(v): k for k, c in enumerate(layer.candidates) for v in c.trainable_variables}
    opt = MomentumSGD(variables, 0.1, momentum=0.9, weight_decay=1e-2)
    seen = []

    @tf.function(autograph=False)
    def step(x, index):
        with tf.GradientTape() as tape:
            context = switched_ops.recording(tape) if recorded else contextlib.nullcontext()
            with context as recording:
                y = layer(x, tf.zeros([len(layer.op_names)]), index, mode="one", training=True)
            loss = tf.reduce_sum(y * tf.cos(y))
        if recorded:
            seen.append(recording)
            grads = tape.gradient(loss, recording.sources)
            switched = [(p, grads[part], per, skip) for p, part, per, skip in recording.updates]
            opt.apply_gradients([], switched=switched)
        else:
            grads = tape.gradient(loss, variables)
            flags = [tf.equal(index, owner[id(v)]) for v in variables]
            opt.apply_gradients(list(zip(grads, variables)), applied=flags)
        return loss

    for index in draws:
        step(x, tf.constant(index))
    assert step.experimental_get_tracing_count() == 1
    out = [v.numpy() for v in [*layer.variables, *opt.buffers]]
    for v, value in zip(layer.variables, start):
        v.assign(value)
    return out, seen


@pytest.mark.slow
@pytest.mark.parametrize("stride,cout", [(1, 8), (2, 12)])
def test_a_recorded_weight_step_updates_what_the_stacked_gradients_update(stride, cout):
    ops = OPS if stride == 1 else OPS[:3]
    layer = _layer("none", ops, stride=stride, cout=cout)
    x = tf.constant(np.random.default_rng(2).normal(size=(4, 10, 10, 8)), tf.float32)
    draws = [0, 1, len(ops) - 1, 0, 2]  # each MBConv, a repeat (momentum), skip at stride 1
    recorded, seen = _recorded_or_stacked(layer, True, draws, x)
    stacked, _ = _recorded_or_stacked(layer, False, draws, x)
    names = [v.path for v in layer.variables] + [f"buffer {k}" for k in range(len(stacked))]
    for a, b, name in zip(recorded, stacked, names):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    # One layer recorded: the drawn op's kernels, gammas and betas as sources,
    # each MBConv's own variables behind them.
    (recording,) = seen
    ((_, part, per_candidate, can_skip),) = recording.updates
    assert can_skip == ("skip" in ops)
    mbconvs = [c for c in layer.candidates if c.op_layers]
    assert len(per_candidate) == len(mbconvs)
    for variables, candidate in zip(per_candidate, mbconvs):
        assert len(variables) == part.stop - part.start == len(candidate.trainable_variables)
    # Every weight moved (each MBConv was drawn), from the state both runs began in.
    trainable = {id(v) for v in layer.trainable_variables}
    for after, v in zip(recorded, layer.variables):
        if id(v) in trainable:
            assert not np.array_equal(after, v.numpy()), v.path
    # A skip draw computes no update: the state after it is the state before.
    if "skip" in ops:
        before, _ = _recorded_or_stacked(layer, True, draws[:2], x)
        after, _ = _recorded_or_stacked(layer, True, draws[:3], x)
        for a, b, name in zip(after, before, names):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_layer_recorded_twice_in_one_step_is_refused():
    layer = _layer("none")
    x = tf.zeros((2, 10, 10, 8))

    @tf.function(autograph=False)
    def step(x, index):
        with tf.GradientTape() as tape, switched_ops.recording(tape):
            alpha = tf.zeros([len(layer.op_names)])
            y = layer(x, alpha, index, mode="one", training=True)
            return layer(y, alpha, index, mode="one", training=True)

    with pytest.raises(ValueError, match="ran twice in one recorded weight step"):
        step(x, tf.constant(0))
