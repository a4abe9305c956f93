"""Derivation: Viterbi against brute force, and hand-set parameters to a known ArchSpec."""

import itertools

import numpy as np
import pytest

from densenas_tf.space import derive
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import load_space


@pytest.mark.parametrize("preset", ["tiny", "fashion_mnist"])
@pytest.mark.parametrize("seed", range(5))
def test_viterbi_equals_brute_force(preset, seed):
    space = load_space(preset)
    beta = np.random.default_rng(seed).normal(scale=2.0, size=len(space.edges))
    probs = derive.path_probabilities(space, beta)
    paths = space.enumerate_paths()
    scores = [derive.path_probability(space, probs, p) for p in paths]
    best = paths[int(np.argmax(scores))]
    assert derive.viterbi_path(space, probs) == best


def test_path_probabilities_are_per_block_softmax(tiny_space):
    beta = np.arange(len(tiny_space.edges), dtype=float)
    probs = derive.path_probabilities(tiny_space, beta)
    for block in tiny_space.blocks:
        ids = [e.index for e in tiny_space.out_edges(block.index)]
        np.testing.assert_allclose(probs[ids], np.exp(beta[ids]) / np.exp(beta[ids]).sum())


def test_hand_set_parameters_give_the_expected_arch(tiny_space):
    space = tiny_space
    # Favour the path 0 -> 2 -> 4 -> 5 -> final.
    beta = np.zeros(len(space.edges))
    for src, dst in [(0, 2), (2, 4), (4, 5)]:
        beta[space.edge(src, dst).index] = 5.0
    head_ops = list(space.head_ops)
    stacking_ops = list(space.stacking_ops)
    alpha_head = np.zeros((len(space.head_edges), len(head_ops)))
    alpha_head[space.head_row(space.edge(0, 2)), head_ops.index("mbconv_k5_e6")] = 1.0
    alpha_head[space.head_row(space.edge(2, 4)), head_ops.index("mbconv_k7_e3")] = 1.0
    alpha_head[space.head_row(space.edge(4, 5)), head_ops.index("mbconv_k3_e6")] = 1.0
    alpha_stack = np.zeros((len(space.stacking_layers), len(stacking_ops)))
    (row_2,) = space.stacking_rows(2)
    (row_4,) = space.stacking_rows(4)
    alpha_stack[row_2, stacking_ops.index("mbconv_k3_e3")] = 1.0
    alpha_stack[row_4, stacking_ops.index("skip")] = 1.0  # dropped from the net
    spec = derive.derive_arch(space, alpha_head, alpha_stack, beta, name="hand")
    expected = ArchSpec.from_block_string(
        "16x16x1 | stem:c8s1+k3e1>8 | 8>16:k5e6s2[k3e3] | 16>32:k7e3s2 | 32>40:k3e6s1 "
        "| final:48 | classes:4"
    )
    assert spec.same_architecture(expected)
    assert spec.provenance["path"] == [0, 2, 4, 5, 6]
    assert spec.provenance["space_fingerprint"] == space.fingerprint()


@pytest.mark.slow
def test_derive_from_a_supernet(tiny_space):
    from densenas_tf.nn.supernet import SuperNet

    net = SuperNet.from_space(tiny_space)
    rng = np.random.default_rng(1)
    for var in net.arch_variables:
        var.assign(rng.normal(scale=2.0, size=var.shape).astype("float32"))
    spec = derive.derive_arch(tiny_space, **net.arch_numpy())
    # The supernet's own path probabilities (TensorFlow) give the same best path.
    probs = net.path_probabilities().numpy()
    paths = tiny_space.enumerate_paths()
    best = paths[int(np.argmax([derive.path_probability(tiny_space, probs, p) for p in paths]))]
    assert tuple(spec.provenance["path"]) == best
    alpha_head = net.alpha_head.numpy()
    for block, (src, dst) in zip(spec.blocks, itertools.pairwise(best)):
        row = tiny_space.head_row(tiny_space.edge(src, dst))
        assert block.head_op == tiny_space.head_ops[int(np.argmax(alpha_head[row]))]


def test_wrong_parameter_shapes_are_refused(tiny_space):
    with pytest.raises(ValueError, match="beta has shape"):
        derive.path_probabilities(tiny_space, np.zeros(3))
    with pytest.raises(ValueError, match="alpha_head has shape"):
        derive.derive_arch(
            tiny_space, np.zeros((2, 6)), np.zeros((4, 7)), np.zeros(len(tiny_space.edges))
        )


@pytest.mark.parametrize("preset", ["tiny", "fashion_mnist"])
@pytest.mark.parametrize("seed", range(4))
def test_two_best_paths_equal_brute_force(preset, seed):
    space = load_space(preset)
    beta = np.random.default_rng(seed).normal(scale=1.0, size=len(space.edges))
    probs = derive.path_probabilities(space, beta)
    paths = space.enumerate_paths()
    scores = np.array([derive.path_probability(space, probs, p) for p in paths])
    order = np.argsort(-scores, kind="stable")
    ranked = derive.best_paths(space, probs, k=2)
    assert ranked[0][0] == derive.viterbi_path(space, probs) == paths[order[0]]
    assert ranked[1][0] == paths[order[1]]
    np.testing.assert_allclose([p for _, p in ranked], scores[order[:2]], rtol=1e-12)


def test_uniform_beta_is_a_near_tie_and_a_clear_preference_is_not(fashion_space):
    space = fashion_space
    rows_h, rows_s = len(space.head_edges), len(space.stacking_layers)
    alpha_head = np.zeros((rows_h, len(space.head_ops)))
    alpha_stack = np.zeros((rows_s, len(space.stacking_ops)))
    alpha_head[:, 1] = alpha_stack[:, 2] = 1e-3  # a choice by a hair
    beta = np.zeros(len(space.edges))
    spec = derive.derive_arch(space, alpha_head, alpha_stack, beta, tie_threshold=0.05)
    info = spec.provenance
    # Under uniform beta the widest block of each stage wins by hop count; its
    # runner-up has exactly half its probability.
    assert info["path"] == [0, 3, 6, 9, 10]
    np.testing.assert_allclose(info["path_margin"], np.log(2.0), rtol=1e-9)
    assert info["min_op_margin"] == pytest.approx(1e-3)
    assert len(info["near_ties"]) == len(info["op_margins"])  # every op choice is a tie
    assert all(m["margin"] == pytest.approx(1e-3) for m in info["op_margins"])
    # Decisive alphas and a decisive path: no near-tie left.
    alpha_head[:, 1] = alpha_stack[:, 2] = 2.0
    for src, dst in [(0, 1), (1, 4), (4, 7), (7, 10)]:
        beta[space.edge(src, dst).index] = 3.0
    spec = derive.derive_arch(space, alpha_head, alpha_stack, beta, tie_threshold=0.05)
    info = spec.provenance
    assert info["path"] == [0, 1, 4, 7, 10]
    assert info["path_margin"] > 0.05 and info["min_op_margin"] == pytest.approx(2.0)
    assert info["near_ties"] == []


def test_non_finite_parameters_get_a_clear_error(tiny_space):
    space = tiny_space
    alpha_head = np.zeros((len(space.head_edges), len(space.head_ops)))
    alpha_stack = np.zeros((len(space.stacking_layers), len(space.stacking_ops)))
    beta = np.zeros(len(space.edges))
    beta[3] = np.nan
    with pytest.raises(
        derive.NonFiniteArchError, match=r"beta holds 1 non-finite value\(s\) \(at \(3,\)\)"
    ):
        derive.derive_arch(space, alpha_head, alpha_stack, beta)
    beta[3] = 0.0
    alpha_stack[0, 1] = np.inf
    with pytest.raises(derive.NonFiniteArchError, match="alpha_stack holds 1 non-finite"):
        derive.derive_arch(space, alpha_head, alpha_stack, beta)
