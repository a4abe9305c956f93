"""The architecture parameters' maths: op weights per forward mode, the
per-block softmax over beta, stateless op sampling and eq. 9's rebalancing.

Pure functions of tensors: the supernet, the expected-latency model and the
searcher all use them, and none of them needs a layer.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

MODES = ("all", "one", "two")
SAMPLING_POLICIES = ("uniform", "softmax", "two")


class OpSample(NamedTuple):
    """Drawn op indices: (rows,) for one op per layer, (rows, 2) for two."""

    head: tf.Tensor
    stack: tf.Tensor


def op_weights(alpha: tf.Tensor, mode: str, sample: tf.Tensor | None = None) -> tf.Tensor:
    """Each op's weight per row of alpha in a forward mode, as a (rows, ops) matrix:
    softmax(alpha) for ``all``; one-hot of the drawn op for ``one``; for ``two``
    the softmax over the two drawn alphas, zero elsewhere."""
    num_ops = alpha.shape[-1]
    if mode == "all":
        return tf.nn.softmax(alpha, axis=-1)
    if mode == "one":
        return tf.one_hot(sample, num_ops, dtype=alpha.dtype)
    if mode == "two":
        pair = tf.nn.softmax(tf.gather(alpha, sample, batch_dims=1), axis=-1)
        return tf.einsum("rk,rko->ro", pair, tf.one_hot(sample, num_ops, dtype=alpha.dtype))
    raise ValueError(f"unknown mode {mode!r}; modes are {MODES}")


def segment_softmax(logits: tf.Tensor, segment_ids: tf.Tensor, num_segments: int) -> tf.Tensor:
    """Softmax of logits within each segment (here: a block's outgoing edges)."""
    maxes = tf.math.unsorted_segment_max(logits, segment_ids, num_segments)
    exps = tf.exp(logits - tf.gather(maxes, segment_ids))
    sums = tf.math.unsorted_segment_sum(exps, segment_ids, num_segments)
    return exps / tf.gather(sums, segment_ids)


def sample_op_indices(alpha: tf.Tensor, seed: tf.Tensor, policy: str) -> tf.Tensor:
    """Stateless draws per row of alpha; see SuperNet.sample_ops for the policies."""
    rows, num_ops = alpha.shape
    if policy == "uniform":
        return tf.random.stateless_uniform([rows], seed, minval=0, maxval=num_ops, dtype=tf.int32)
    if policy == "softmax":
        draws = tf.random.stateless_categorical(alpha, 1, seed, dtype=tf.int32)
        return tf.reshape(draws, [rows])
    if policy == "two":
        if num_ops < 2:
            raise ValueError(f"policy 'two' needs at least two ops per layer, got {num_ops}")
        # Gumbel top-k: the top two of alpha + Gumbel noise are two draws without
        # replacement in proportion to softmax(alpha).
        uniform = tf.random.stateless_uniform([rows, num_ops], seed, minval=1e-20, maxval=1.0)
        gumbel = -tf.math.log(-tf.math.log(uniform))
        return tf.math.top_k(alpha + gumbel, k=2, sorted=True).indices
    raise ValueError(f"unknown sampling policy {policy!r}; policies are {SAMPLING_POLICIES}")


def rebalance_alpha(alpha, alpha_before: tf.Tensor, sampled: tf.Tensor, apply=True) -> None:
    """Eq. 9: after an architecture step, shift each layer's two sampled alphas by
    log(sum exp(old) / sum exp(new)) over the pair, so the ops that were not
    sampled keep their softmax share. ``apply`` (a bool or a boolean tensor,
    for a traced step): False leaves alpha as it is."""
    alpha_after = tf.convert_to_tensor(alpha)
    old = tf.gather(alpha_before, sampled, batch_dims=1)
    new = tf.gather(alpha_after, sampled, batch_dims=1)
    shift = tf.reduce_logsumexp(old, axis=1) - tf.reduce_logsumexp(new, axis=1)
    shift = tf.where(apply, shift, tf.zeros_like(shift))
    mask = tf.reduce_sum(tf.one_hot(sampled, alpha_after.shape[1], dtype=alpha_after.dtype), axis=1)
    alpha.assign(alpha_after + mask * shift[:, None])
