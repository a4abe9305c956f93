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
from densenas_tf.space.budget import LatencyCosts
from densenas_tf.space.spaces import SearchSpace


def latency_costs(space: SearchSpace, table: LatencyTable, source: str = "") -> LatencyCosts:
    """The table's figure for every choice in the space, laid out like the
    architecture parameters (``space.budget.LatencyCosts``); ``source`` names
    the table in messages (default: its file, else its device)."""
    table.check_space(space)
    keys = space_keys(space)
    head = [[table.net_ms(k) for k in row] for row in keys.head]
    stack = [[table.net_ms(k) for k in row] for row in keys.stack]
    if not source:
        source = str(table.path) if table.path is not None else ""
        source = source or str(table.provenance.get("device") or "")
    return LatencyCosts(
        head_ms=np.reshape(np.asarray(head, dtype=np.float64), (-1, len(space.head_ops))),
        stack_ms=np.reshape(np.asarray(stack, dtype=np.float64), (-1, len(space.stacking_ops))),
        final_ms=np.asarray([table.net_ms(k) for k in keys.final], dtype=np.float64),
        fixed_ms=table.overhead_ms + table.net_ms(keys.stem) + table.net_ms(keys.classifier),
        source=source,
    )


class ExpectedLatency:
    """Binds a space to a latency table; call it with op weights and path probabilities."""

    def __init__(self, space: SearchSpace, table: LatencyTable):
        costs = latency_costs(space, table)
        self.space = space
        self.costs = costs
        self.head_ms = tf.constant(costs.head_ms, tf.float32)
        self.stack_ms = tf.constant(costs.stack_ms, tf.float32)
        self.final_ms = [float(v) for v in costs.final_ms]
        self.fixed_ms = costs.fixed_ms
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
