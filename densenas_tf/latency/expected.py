"""Expected latency of the supernet, differentiable in alpha and beta (eqs. 5-7).

Computed backwards from the last block:
  lat(b) = stack(b) + sum_j p_{b->j} * (head(b->j) + lat(j)),  lat(final) = 0
  stack(b) = sum over b's stacking layers of sum_o w_o * lat_o
  head(b->j) = sum_o w_o * lat_o of the head layer on edge b->j (the final 1x1
               conv's entry on edges into the final node)
  network = overhead + stem + lat(0) + classifier
where w are the op weights of the forward mode (``arch_params.op_weights``;
``SuperNet.latency_weights`` gives all three inputs) and
every table entry counts without its per-invocation overhead.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from densenas_tf.latency.table import LatencyTable, space_keys
from densenas_tf.space.spaces import SearchSpace


class ExpectedLatency:
    """Binds a space to a latency table; call it with op weights and path probabilities."""

    def __init__(self, space: SearchSpace, table: LatencyTable):
        table.check_space(space)
        keys = space_keys(space)
        self.space = space
        num_head_ops, num_stack_ops = len(space.head_ops), len(space.stacking_ops)
        head = [[table.net_ms(k) for k in row] for row in keys.head]
        stack = [[table.net_ms(k) for k in row] for row in keys.stack]
        self.head_ms = tf.constant(np.reshape(head, (-1, num_head_ops)), tf.float32)
        self.stack_ms = tf.constant(np.reshape(stack, (-1, num_stack_ops)), tf.float32)
        self.final_ms = [table.net_ms(k) for k in keys.final]
        self.fixed_ms = table.overhead_ms + table.net_ms(keys.stem) + table.net_ms(keys.classifier)
        self._head_row = {e.index: space.head_row(e) for e in space.head_edges}
        self._final_pos = {e.index: k for k, e in enumerate(space.final_edges)}

    def __call__(self, head_weights, stack_weights, path_probs) -> tf.Tensor:
        """Expected latency in ms (a scalar tensor)."""
        space = self.space
        head_lat = tf.reduce_sum(tf.cast(head_weights, tf.float32) * self.head_ms, axis=-1)
        stack_lat = tf.reduce_sum(tf.cast(stack_weights, tf.float32) * self.stack_ms, axis=-1)
        probs = tf.cast(path_probs, tf.float32)
        node_lat = {space.final_node: tf.constant(0.0)}
        for block in reversed(space.blocks):
            rows = list(space.stacking_rows(block.index))
            total = tf.reduce_sum(tf.gather(stack_lat, rows)) if rows else tf.constant(0.0)
            for edge in space.out_edges(block.index):
                if edge.dst == space.final_node:
                    edge_lat = tf.constant(self.final_ms[self._final_pos[edge.index]])
                else:
                    edge_lat = head_lat[self._head_row[edge.index]]
                total = total + probs[edge.index] * (edge_lat + node_lat[edge.dst])
            node_lat[block.index] = total
        return self.fixed_ms + node_lat[0]
