"""MomentumSGD follows PyTorch's SGD (coupled weight decay, momentum buffer) and skips
weights without a gradient."""

import numpy as np
import tensorflow as tf

from densenas_tf.optimizers import MomentumSGD


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
