"""MomentumSGD follows PyTorch's SGD (coupled weight decay, momentum buffer) and skips
weights without a gradient."""

import numpy as np
import tensorflow as tf

from densenas_tf.nn.optimizers import MomentumSGD


def test_updates_match_the_reference_formula_and_skip_missing_gradients():
    w = tf.Variable([1.0, -2.0])
    u = tf.Variable([0.5])
    opt = MomentumSGD([w, u], learning_rate=lambda step: 0.1 / (1.0 + tf.cast(step, tf.float32)),
                      momentum=0.9, weight_decay=0.01)  # fmt: skip
    expected_w, buffer = np.array([1.0, -2.0]), np.zeros(2)
    for step, grad in enumerate([np.array([0.3, 0.4]), np.array([-0.1, 0.2])]):
        opt.apply_gradients([(tf.constant(grad, tf.float32), w), (None, u)])
        lr = 0.1 / (1.0 + step)
        buffer = 0.9 * buffer + grad + 0.01 * expected_w
        expected_w = expected_w - lr * buffer
        np.testing.assert_allclose(w.numpy(), expected_w, rtol=1e-6)
    np.testing.assert_array_equal(u.numpy(), [0.5])  # never drawn: untouched
    np.testing.assert_array_equal(opt.buffers[1].numpy(), [0.0])
    assert int(opt.iterations) == 2


def test_applied_flags_gate_whole_ops_in_a_traced_step():
    """In a traced step a flag per op says whether it was drawn: a drawn op's
    variables take the same update as without flags; an undrawn op's
    variables and buffers stay exactly as they were, though its gradient is a
    (zero) tensor, and its momentum is not applied either."""
    drawn, undrawn = tf.Variable([1.0, -2.0]), tf.Variable([[0.5, 0.25]])
    plain = tf.Variable([1.0, -2.0])
    opt = MomentumSGD([drawn, undrawn], learning_rate=lambda step: 0.1, momentum=0.9,
                      weight_decay=0.01)  # fmt: skip
    reference = MomentumSGD([plain], learning_rate=lambda step: 0.1, momentum=0.9,
                            weight_decay=0.01)  # fmt: skip
    opt.buffers[1].assign([[0.3, -0.7]])  # momentum from earlier draws

    @tf.function(autograph=False)
    def step(grad, flags):
        opt.apply_gradients(
            [(grad, drawn), (tf.zeros([1, 2]), undrawn)], applied=[flags[0], flags[1]]
        )

    for grad in ([0.3, 0.4], [-0.1, 0.2]):
        step(tf.constant(grad), tf.constant([True, False]))
        reference.apply_gradients([(tf.constant(grad), plain)])
    np.testing.assert_array_equal(drawn.numpy(), plain.numpy())
    np.testing.assert_array_equal(opt.buffers[0].numpy(), reference.buffers[0].numpy())
    np.testing.assert_array_equal(undrawn.numpy(), [[0.5, 0.25]])
    np.testing.assert_array_equal(opt.buffers[1].numpy(), np.float32([[0.3, -0.7]]))
    # Drawn again, it moves: its own gradient, weight decay and momentum.
    step(tf.constant([0.0, 0.0]), tf.constant([False, True]))
    expected = np.array([[0.5, 0.25]]) - 0.1 * (
        0.9 * np.array([[0.3, -0.7]]) + 0.01 * np.array([[0.5, 0.25]])
    )
    np.testing.assert_allclose(undrawn.numpy(), expected, rtol=1e-6)
    assert int(opt.iterations) == 3
