"""The supernet: forward modes, sampling, the arch/weight split, and rebalancing."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from densenas_tf.nn.arch_params import rebalance_alpha
from densenas_tf.nn.mixed import CandidateOp, ConvBNAct, DenseBlock, Execution, MixedOp
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.space.spaces import load_space


@pytest.fixture(scope="module")
def tiny_net():
    return SuperNet.from_space(load_space("tiny"), arch_init_seed=3)


def _images(space, batch=2, seed=0):
    return tf.random.stateless_normal((batch, *space.input_shape), seed=[seed, 7])


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "fashion_mnist", "fixed_block_mbv2", "imagenet_mbv2"])
def test_every_preset_maps_a_batch_to_logits_in_all_modes(preset):
    space = load_space(preset)
    net = SuperNet.from_space(space)
    images = _images(space, batch=1 if space.input_shape[0] > 64 else 2)
    batch = images.shape[0]
    outputs = {"all": net(images, mode="all")}
    outputs["one"] = net(images, mode="one", sample=net.sample_ops([1, 2], "softmax"))
    outputs["two"] = net(images, mode="two", sample=net.sample_ops([1, 2], "two"))
    for mode, logits in outputs.items():
        assert logits.shape == (batch, space.num_classes), mode
        assert np.all(np.isfinite(logits.numpy())), mode


def test_arch_variables_are_apart_from_weights(tiny_net):
    space = tiny_net.space
    shapes = [tuple(v.shape) for v in tiny_net.arch_variables]
    assert shapes == [
        (len(space.head_edges), len(space.head_ops)),
        (len(space.stacking_layers), len(space.stacking_ops)),
        (len(space.edges),),
    ]
    arch_ids = {id(v) for v in tiny_net.arch_variables}
    assert not arch_ids & {id(v) for v in tiny_net.weight_variables}
    assert len(tiny_net.weight_variables) + 3 == len(tiny_net.trainable_variables)


@pytest.mark.slow
def test_arch_init_is_small_and_seeded():
    space = load_space("tiny")
    a = SuperNet.from_space(space, arch_init_seed=5).arch_numpy()
    b = SuperNet.from_space(space, arch_init_seed=5).arch_numpy()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert 0 < np.abs(a[key]).max() < 1e-2


@pytest.mark.slow
def test_two_op_mode_gives_gradients_to_alpha_and_beta(tiny_net):
    space = tiny_net.space
    sample = tiny_net.sample_ops([4, 4], "two")
    labels = tf.constant([0, 3])
    with tf.GradientTape() as tape:
        logits = tiny_net(_images(space), mode="two", sample=sample, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, tiny_net.arch_variables)
    for name, grad in zip(["alpha_head", "alpha_stack", "beta"], grads):
        assert grad is not None, name
        assert float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grad)))) > 0, name
    # Only the two drawn ops of each layer receive alpha gradient.
    head_grad = tf.convert_to_tensor(grads[0]).numpy()
    for row, pair in enumerate(sample.head.numpy()):
        nonzero = set(np.flatnonzero(head_grad[row]))
        assert nonzero <= set(pair)


def test_same_seed_same_ops_and_seeds_differ(tiny_net):
    for policy in ("uniform", "softmax", "two"):
        a = tiny_net.sample_ops([11, 12], policy)
        b = tiny_net.sample_ops(tf.constant([11, 12]), policy)
        np.testing.assert_array_equal(a.head, b.head)
        np.testing.assert_array_equal(a.stack, b.stack)
        draws = {tiny_net.sample_ops([s, 0], policy).head.numpy().tobytes() for s in range(8)}
        assert len(draws) > 1, policy


def test_two_policy_draws_distinct_ops(tiny_net):
    for seed in range(10):
        sample = tiny_net.sample_ops([seed, 1], "two")
        assert sample.head.shape == (len(tiny_net.space.head_edges), 2)
        for pairs in (sample.head.numpy(), sample.stack.numpy()):
            assert np.all(pairs[:, 0] != pairs[:, 1])


@pytest.mark.slow
def test_softmax_policy_follows_alpha():
    net = SuperNet.from_space(load_space("tiny"))
    probs = np.array([0.7, 0.1, 0.1, 0.05, 0.03, 0.02])
    alpha = np.tile(np.log(probs), (len(net.space.head_edges), 1)).astype("float32")
    net.alpha_head.assign(alpha)
    draws = np.stack([net.sample_ops([s, 9], "softmax").head.numpy() for s in range(300)])
    freq = np.bincount(draws.ravel(), minlength=6) / draws.size
    np.testing.assert_allclose(freq, probs, atol=0.03)
    # Uniform ignores alpha.
    draws = np.stack([net.sample_ops([s, 9], "uniform").head.numpy() for s in range(300)])
    freq = np.bincount(draws.ravel(), minlength=6) / draws.size
    np.testing.assert_allclose(freq, np.full(6, 1 / 6), atol=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
def test_only_the_drawn_ops_run(traced):
    """In a sampled step only the drawn candidate of each layer updates its BN statistics."""
    net = SuperNet.from_space(load_space("tiny"))
    sample = net.sample_ops([2, 3], "uniform")
    blocks = net.dense_blocks

    def moving_means():
        return [
            [[c.op_layers["project_bn"].moving_mean.numpy().copy() for c in m.candidates if c.op_layers]
             for m in b.heads + b.stacking]
            for b in blocks
        ]  # fmt: skip

    before = moving_means()
    if traced:  # the tf.switch_case path
        forward = tf.function(lambda x, s: net(x, mode="one", sample=s, training=True))
        forward(_images(net.space), sample)
    else:
        net(_images(net.space), mode="one", sample=sample, training=True)
    after = moving_means()
    space = net.space
    for block, b_before, b_after in zip(space.blocks[1:], before, after):
        rows = [("head", space.head_row(e)) for e in space.in_edges(block.index)]
        rows += [("stack", r) for r in space.stacking_rows(block.index)]
        for (kind, row), layer_before, layer_after in zip(rows, b_before, b_after):
            drawn = int((sample.head if kind == "head" else sample.stack)[row])
            changed = [not np.array_equal(x, y) for x, y in zip(layer_before, layer_after)]
            ops = space.head_ops if kind == "head" else space.stacking_ops
            expected = [k == drawn for k, op in enumerate(ops) if op != "skip"]
            assert changed == expected, (block.index, kind, row)


def test_modes_agree_when_alpha_is_one_hot():
    layer = MixedOp(["mbconv_k3_e3", "mbconv_k5_e6", "skip"], 8, 8, 1, name="mixed")
    layer.build((None, 6, 6, 8))
    x = tf.random.stateless_normal((2, 6, 6, 8), seed=[1, 2])
    for k in range(3):
        alpha = tf.one_hot(k, 3) * 60.0
        mixed = layer(x, alpha, mode="all")
        single = layer(x, alpha, tf.constant(k), mode="one")
        pair = layer(x, alpha, tf.constant([k, (k + 1) % 3]), mode="two")
        np.testing.assert_allclose(mixed, single, atol=1e-5)
        np.testing.assert_allclose(pair, single, atol=1e-5)


def test_two_mode_weights_the_pair_by_the_softmax_over_their_alphas():
    layer = MixedOp(["mbconv_k3_e3", "mbconv_k5_e6", "mbconv_k7_e3", "skip"], 8, 8, 1, name="pair")
    layer.build((None, 6, 6, 8))
    x = tf.random.stateless_normal((2, 6, 6, 8), seed=[5, 6])
    alpha = tf.constant([0.3, -1.2, 0.9, 0.1])
    for i, j in [(0, 2), (3, 1), (2, 3)]:
        got = layer(x, alpha, tf.constant([i, j]), mode="two")
        w = np.exp([alpha[i], alpha[j]]) / np.exp([alpha[i], alpha[j]]).sum()
        y_i = layer(x, alpha, tf.constant(i), mode="one")
        y_j = layer(x, alpha, tf.constant(j), mode="one")
        np.testing.assert_allclose(got, w[0] * y_i + w[1] * y_j, atol=1e-5)
    # 'all' mixes every op by softmax(alpha).
    weights = tf.nn.softmax(alpha).numpy()
    ys = [layer(x, alpha, tf.constant(k), mode="one") for k in range(4)]
    np.testing.assert_allclose(
        layer(x, alpha, mode="all"), sum(w * y for w, y in zip(weights, ys)), atol=1e-5
    )


@pytest.mark.slow
def test_graph_mode_selects_the_same_ops_as_eager():
    net = SuperNet.from_space(load_space("tiny"))
    images = _images(net.space)
    sample = net.sample_ops([6, 1], "softmax")
    eager = net(images, mode="one", sample=sample)
    graph = tf.function(lambda x, s: net(x, mode="one", sample=s))(images, sample)
    np.testing.assert_allclose(eager, graph, rtol=1e-5, atol=1e-5)


def test_path_probabilities_sum_to_one_per_block(tiny_net):
    probs = tiny_net.path_probabilities().numpy()
    for block in tiny_net.space.blocks:
        ids = [e.index for e in tiny_net.space.out_edges(block.index)]
        assert np.isclose(probs[ids].sum(), 1.0)
    # Each the softmax of beta over its block's out-edges (near-uniform here:
    # beta starts within about 1e-3 of 0; spread out in the next test).
    from densenas_tf.space.derive import path_probabilities

    np.testing.assert_allclose(
        probs, path_probabilities(tiny_net.space, tiny_net.beta.numpy()), rtol=1e-6
    )


def test_path_probabilities_are_the_softmax_of_beta_over_each_blocks_out_edges(tiny_net):
    """Paper eq. 3, by hand: p_ij = exp(beta_ij) / sum over i's out-edges k of
    exp(beta_ik), for beta spread far beyond its initial 1e-3 (so that a
    softmax over the wrong edges, all of them, or none shows)."""
    space = tiny_net.space
    beta = np.random.default_rng(4).normal(0.0, 2.0, len(space.edges))
    initial = tiny_net.beta.numpy()
    tiny_net.beta.assign(beta.astype(np.float32))
    try:
        probs = tiny_net.path_probabilities().numpy()
    finally:
        tiny_net.beta.assign(initial)  # the module's net as the other tests know it
    by_hand = np.empty(len(space.edges))
    for edge in space.edges:
        siblings = [e.index for e in space.edges if e.src == edge.src]
        by_hand[edge.index] = np.exp(beta[edge.index]) / np.exp(beta[siblings]).sum()
    np.testing.assert_allclose(probs, by_hand, rtol=1e-5)
    # Blocks of two or more out-edges, so a softmax over each block is tested.
    assert max(len(space.out_edges(b.index)) for b in space.blocks) >= 2
    assert not np.allclose(probs, probs.mean())
    # The derivation's NumPy path probabilities are the same.
    from densenas_tf.space.derive import path_probabilities

    np.testing.assert_allclose(path_probabilities(space, beta), by_hand, rtol=1e-12)


@pytest.mark.slow
def test_rebalancing_keeps_unsampled_shares():
    net = SuperNet.from_space(load_space("tiny"))
    rng = np.random.default_rng(0)
    net.alpha_stack.assign(rng.normal(size=net.alpha_stack.shape).astype("float32"))
    before = net.alpha_stack.numpy().copy()
    sample = net.sample_ops([3, 3], "two").stack
    # An architecture update that moves only the sampled entries.
    step = np.zeros_like(before)
    for row, pair in enumerate(sample.numpy()):
        step[row, pair] = rng.normal(size=2) * 0.5
    net.alpha_stack.assign(before + step)
    rebalance_alpha(net.alpha_stack, tf.constant(before), sample)
    after = net.alpha_stack.numpy()
    p_before = tf.nn.softmax(before).numpy()
    p_after = tf.nn.softmax(after).numpy()
    for row, pair in enumerate(sample.numpy()):
        others = [k for k in range(before.shape[1]) if k not in pair]
        np.testing.assert_allclose(p_after[row, others], p_before[row, others], rtol=1e-5)
        np.testing.assert_allclose(p_after[row, pair].sum(), p_before[row, pair].sum(), rtol=1e-5)
        # The update's direction within the pair survives.
        diff_before = before[row, pair[0]] - before[row, pair[1]]
        diff_after = after[row, pair[0]] - after[row, pair[1]]
        assert np.isclose(
            diff_after - diff_before, step[row, pair[0]] - step[row, pair[1]], atol=1e-5
        )


def test_unknown_mode_and_missing_sample_are_errors(tiny_net):
    images = _images(tiny_net.space)
    with pytest.raises(ValueError, match="unknown mode"):
        tiny_net(images, mode="three")
    with pytest.raises(ValueError, match="needs a sample"):
        tiny_net(images, mode="one")
    with pytest.raises(ValueError, match="unknown sampling policy"):
        tiny_net.sample_ops([0, 0], "greedy")


@pytest.mark.parametrize(
    "layer",
    [
        CandidateOp("mbconv_k5_e3", 8, 16, 2, bn_momentum=0.8, synchronized_bn=False, name="c"),
        MixedOp(["mbconv_k3_e3", "skip"], 8, 8, 1, bn_momentum=0.8, name="m"),
        MixedOp(["mbconv_k3_e3", "mbconv_k5_e6"], 8, 8, 1, weight_sharing="nested", name="n"),
        DenseBlock([8, 12], [2, 1], 12, 2, ["mbconv_k3_e3"], ["skip", "mbconv_k3_e6"], name="d"),
        ConvBNAct(16, 3, 2, bn_momentum=0.7, name="s"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_covers_constructor_arguments(layer):
    config = layer.get_config()
    params = inspect.signature(type(layer).__init__).parameters
    # "shared" is a live reference to the owning MixedOp's NestedKernels layer:
    # a MixedOp rebuilds it from its own config (weight_sharing).
    for name in params:
        if name not in ("self", "kwargs", "shared"):
            assert name in config, name
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


@pytest.mark.slow
def test_supernet_get_config_round_trips(tiny_net):
    config = tiny_net.get_config()
    params = inspect.signature(SuperNet.__init__).parameters
    assert {p for p in params if p not in ("self", "kwargs")} <= set(config)
    clone = SuperNet.from_config(config)
    assert clone.get_config() == config
    assert clone.space == tiny_net.space


@pytest.mark.slow
def test_arch_gradients_without_weight_gradients_are_the_same():
    """weight_gradients=False (the architecture step) changes nothing but the
    kernels' gradients, which it leaves out; eager per-op graphs and a fully
    traced call agree."""
    net = SuperNet.from_space(load_space("tiny"), arch_init_seed=5)
    images, labels = _images(net.space, batch=4, seed=3), tf.constant([0, 1, 2, 3])
    sample = net.sample_ops([1, 2], "two")
    # Every conv kernel (the classifier's dense kernel is cheap and keeps its gradient).
    kernels = [v for v in net.weight_variables if "kernel" in v.path and "classifier" not in v.path]

    def grads(weight_gradients):
        with tf.GradientTape(persistent=True) as tape:
            logits = net(
                images, mode="two", sample=sample, training=True, weight_gradients=weight_gradients
            )
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        arch = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, net.arch_variables)]
        return arch, tape.gradient(loss, kernels), logits.numpy()

    full, full_kernels, logits = grads(True)
    lean, lean_kernels, lean_logits = grads(False)
    np.testing.assert_allclose(lean_logits, logits, rtol=1e-5, atol=1e-6)
    for a, b in zip(full, lean):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)
    assert any(g is not None for g in full_kernels)
    assert all(g is None for g in lean_kernels)
    traced = tf.function(
        lambda x: net(x, mode="two", sample=sample, training=True, weight_gradients=False)
    )
    np.testing.assert_allclose(traced(images).numpy(), logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_and_inline_ops_agree():
    """Each op as a traced graph (the default) computes what running it kernel
    by kernel computes, forward and backward."""
    net = SuperNet.from_space(load_space("tiny"), arch_init_seed=2)
    images, labels = _images(net.space, batch=4, seed=5), tf.constant([1, 2, 3, 0])
    sample = net.sample_ops([3, 3], "uniform")

    def run():
        with tf.GradientTape() as tape:
            logits = net(images, mode="one", sample=sample, training=False)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, net.weight_variables)
        return logits.numpy(), [
            None if g is None else tf.convert_to_tensor(g).numpy() for g in grads
        ]

    logits, grads = run()
    net.execution = Execution(compiled_ops=False)
    inline_logits, inline_grads = run()
    np.testing.assert_allclose(inline_logits, logits, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, inline_grads):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["one", "two", "all"])
def test_direct_forward_matches_layer_by_layer(mode, smooth_relu6):
    """The eager one-device path (coefficients computed once, each op scaled
    inside its graph) gives the layer-by-layer path's logits, gradients (for
    the weights and for alpha and beta) and batch-norm statistics updates.

    Gradients are compared in both batch-norm modes, with ReLU6 smoothed
    (conftest.smooth_relu6). With the true ReLU6, over weight seeds 0-36 (mode
    "two", training mode) 35 seeds put the two paths within 0.6-2.1e-6 of the
    largest gradient and two far apart (seed 16 1.8e-2, seed 28 4.2e-3), all or
    nothing: the paths' rounding differences put a pre-activation on the other
    side of a ReLU6 kink. Smoothed, every seed agrees to float noise."""
    keras.utils.set_random_seed(0)
    net = SuperNet.from_space(load_space("tiny"), arch_init_seed=4, arch_init_std=0.5)
    images, labels = _images(net.space, batch=4, seed=6), tf.constant([1, 2, 3, 0])
    sample = (
        None if mode == "all" else net.sample_ops([7, 1], "two" if mode == "two" else "uniform")
    )
    variables = net.weight_variables + net.arch_variables

    def run(training):
        initial = net.get_weights()
        with tf.GradientTape() as tape:
            logits = net(images, mode=mode, sample=sample, training=training)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, variables)
        after = net.get_weights()  # training mode moves the BN statistics
        net.set_weights(initial)
        grads = [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]
        return logits.numpy(), grads, after

    net.execution = Execution(graph_forward_all=False)  # mode all: the eager direct path
    direct = {training: run(training) for training in (False, True)}
    assert smooth_relu6  # the smooth clip is what ran
    net.execution = Execution(graph_forward_all=False, direct_forward=False)
    layered = {training: run(training) for training in (False, True)}
    if mode == "all":
        # The all-ops forward as one traced graph (the default) computes the same.
        net.execution = Execution(direct_forward=False)
        traced = {training: run(training) for training in (False, True)}
        assert len(net.__dict__["_forward_all_graphs"]) == 2  # one graph per training flag
        for training in (False, True):
            np.testing.assert_allclose(
                traced[training][0], direct[training][0], rtol=1e-5, atol=1e-5
            )
            for a, b in zip(traced[training][1], layered[training][1]):
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip(traced[True][2], direct[True][2]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Logits of a few tenths summed from every op and edge: rounding differs by
    # about 1e-6 between the two summation orders.
    for training in (False, True):
        np.testing.assert_allclose(direct[training][0], layered[training][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(direct[True][2], layered[True][2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = [not np.array_equal(a, b) for a, b in zip(direct[True][2], net.get_weights())]
    assert any(moved)  # the statistics compared above did change
    # Training mode, as the search's steps run ("one" drawn op per layer in the
    # weight step, "two" in the architecture step, and every op): each element
    # within 1e-4 of the net's largest gradient (measured, smoothed: at most
    # 2.9e-6 over weight seeds 0-29 in mode "two", 2.2e-6 over 0-5 in "all").
    trained, layered_trained = direct[True][1], layered[True][1]
    largest = max(np.abs(b).max() for b in layered_trained if b is not None)
    for a, b, v in zip(trained, layered_trained, variables):
        assert (a is None) == (b is None), v.path
        if a is not None:
            assert np.abs(a - b).max() <= 1e-4 * largest, v.path
    grads, layered_grads = direct[False][1], layered[False][1]
    arch_grads = grads[-3:]
    if mode == "one":  # beta shapes the heads' sum; alpha is not used by one drawn op
        assert arch_grads[2] is not None and np.abs(arch_grads[2]).max() > 0
    else:
        assert all(g is not None and np.abs(g).max() > 0 for g in arch_grads)
    assert sum(g is not None for g in grads) > 10
    for a, b, v in zip(grads, layered_grads, variables):
        assert (a is None) == (b is None), v.path
        if a is not None:
            # Each element within 1e-3 of its tensor's largest, the tensor within
            # 1e-3 of its norm (measured, smoothed: 2.6e-5 at most over weight
            # seeds 0-29, mode "two"); a wrong coefficient or a missing op moves
            # whole tensors by far more.
            np.testing.assert_allclose(
                a, b, rtol=1e-4, atol=max(1e-9, 1e-3 * np.abs(b).max()), err_msg=v.path
            )
            assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(b) + 1e-9, v.path


@pytest.mark.parametrize(("stride", "cout"), [(1, 8), (2, 12)])
def test_nested_sharing_ops_are_slices_of_one_kernel(stride, cout):
    """Each op of a nested mixed layer computes what a plain op with the sliced
    kernels (centre k x k, first e * C_in channels) computes, in training mode;
    its gradient reaches exactly that slice of the shared kernels."""
    from densenas_tf.nn import op_layers

    names = ["mbconv_k3_e3", "mbconv_k5_e6", "mbconv_k7_e3"] + (["skip"] if stride == 1 else [])
    layer = MixedOp(names, 8, cout, stride, name=f"nested{stride}", weight_sharing="nested")
    layer.build((None, 8, 8, 8))
    shared = layer.shared
    assert shared.dw_kernel.shape == (7, 7, 48, 1)
    assert shared.expand_kernel.shape == (1, 1, 8, 48)
    assert shared.project_kernel.shape == (1, 1, 48, cout)
    # Conv kernels live once, in the shared layer; each op keeps only its BNs.
    kernels = [v for v in layer.trainable_variables if "kernel" in v.path]
    assert len(kernels) == 3
    x = tf.random.stateless_normal((2, 8, 8, 8), seed=[3, 4])
    for k, name in enumerate(names[:3]):
        kernel, expansion = int(name[8]), int(name[-1])
        hidden, start = 8 * expansion, (7 - kernel) // 2
        plain = op_layers.make_op_layers(name, 8, cout, stride, name=f"plain_{name}{stride}")
        model_layers = [plain[r] for r in op_layers.WEIGHTED_ROLES]
        shape = (2, 8, 8, 8)
        for role_layer in model_layers:
            role_layer.build(shape)
            shape = role_layer.compute_output_shape(shape)
        plain["expand_conv"].kernel.assign(shared.expand_kernel[:, :, :, :hidden])
        plain["dw_conv"].kernel.assign(
            shared.dw_kernel[start : start + kernel, start : start + kernel, :hidden]
        )
        plain["project_conv"].kernel.assign(shared.project_kernel[:, :, :hidden])
        expected = op_layers.apply_op_layers(plain, x, training=True)
        with tf.GradientTape() as tape:
            got = layer(x, tf.zeros(len(names)), tf.constant(k), mode="one", training=True)
            loss = tf.reduce_sum(got * tf.random.stateless_normal(got.shape, seed=[k, 1]))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        grad = tape.gradient(loss, shared.dw_kernel).numpy()
        inside = np.zeros_like(grad, dtype=bool)
        inside[start : start + kernel, start : start + kernel, :hidden] = True
        assert np.all(grad[~inside] == 0.0) and np.count_nonzero(grad[inside]) > 0.9 * inside.sum()


@pytest.mark.slow
def test_nested_supernet_trains_fewer_weights_and_matches_the_layered_forward(fashion_space):
    plain = SuperNet.from_space(fashion_space)
    nested = SuperNet.from_space(fashion_space, weight_sharing="nested")
    count = lambda net: sum(int(np.prod(v.shape)) for v in net.weight_variables)  # noqa: E731
    assert count(nested) < 0.35 * count(plain)
    sample = nested.sample_ops(tf.constant([4, 5]), "two")
    images = tf.random.stateless_uniform((4, 28, 28, 1), seed=[7, 8])
    direct = nested(images, mode="two", sample=sample, training=True)
    nested.execution = Execution(direct_forward=False)
    layered = nested(images, mode="two", sample=sample, training=True)
    np.testing.assert_allclose(direct, layered, atol=1e-4)
    with pytest.raises(ValueError, match="unknown weight_sharing 'shared'"):
        MixedOp(["mbconv_k3_e3"], 8, 8, 1, weight_sharing="shared")


def _chain_space():
    """tiny with one connection per stage: every block feeds only the next,
    so the supernet is one net and its one path is every block."""
    config = load_space("tiny").to_config()
    config["name"] = "tiny_chain"
    config["connections_per_stage"] = [1] * len(config["connections_per_stage"])
    from densenas_tf.space.spaces import SearchSpace

    return SearchSpace.from_config(config)


@pytest.mark.parametrize("training", [True, False])
def test_one_path_run_alone_is_the_supernet_when_the_supernet_is_that_path(training):
    space = _chain_space()
    assert len(space.edges) == space.num_blocks  # a chain
    net = SuperNet.from_space(space, arch_init_seed=1)
    images = _images(space, batch=4)
    sample = net.sample_ops([4, 5], "uniform")
    path = tuple(range(space.final_node + 1))
    heads = {r: int(v) for r, v in enumerate(sample.head.numpy())}
    stacks = {r: int(v) for r, v in enumerate(sample.stack.numpy())}
    whole = net(images, mode="one", sample=sample, training=training)
    alone = net.path_call(images, path, heads, stacks, training=training)
    np.testing.assert_allclose(alone.numpy(), whole.numpy(), rtol=1e-4, atol=1e-5)


def test_one_path_runs_only_its_blocks_and_its_ops():
    """Changing the weights of a block off the path, or of a head op the net
    does not use, leaves its logits as they were; changing a chosen op's
    weights changes them."""
    net = SuperNet.from_space(load_space("tiny"), arch_init_seed=3)
    space = net.space
    images = _images(space, batch=4)
    path = min(space.enumerate_paths(), key=len)
    heads = {r: 1 for r in range(len(space.head_edges))}
    stacks = {r: 0 for r in range(len(space.stacking_layers))}
    before = net.path_call(images, path, heads, stacks).numpy()
    on = path[1]
    k = [e.index for e in space.in_edges(on)].index(space.edge(path[0], on).index)
    off = next(b.index for b in space.blocks if b.index not in path)

    def bump(prefix):
        found = [v for v in net.weight_variables if f"/{prefix}" in v.path]
        assert found, prefix
        for variable in found:
            variable.assign(variable * 1.5 + 0.1)

    bump(f"block{off}/")  # a block the path does not enter
    bump(f"block{on}_head{k}_{space.head_ops[0]}/")  # an op the net does not use
    np.testing.assert_allclose(net.path_call(images, path, heads, stacks).numpy(), before)
    bump(f"block{on}_head{k}_{space.head_ops[1]}/")  # the op it uses
    assert not np.allclose(net.path_call(images, path, heads, stacks).numpy(), before)
    with pytest.raises(ValueError, match="a path runs from block 0"):
        net.path_call(images, path[1:], heads, stacks)
