"""Which kernel computes a depthwise kernel's gradient (``tools/bench_kernels.py``).

With TensorFlow's oneDNN kernels on, ``DepthwiseConv2dNativeBackpropFilter``
with 'same' padding runs oneDNN's kernel; with the same padding spelled out
(``EXPLICIT``) it runs TensorFlow's own. ``op_layers.eigen_depthwise_kernel_gradient``
picks one per shape; this module times both on every depthwise shape of a
space, so the rule can be checked on another machine.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from densenas_tf.latency.table import space_keys
from densenas_tf.nn import op_layers
from densenas_tf.space import ops


def depthwise_shapes(space, batch_size: int) -> list[tuple[int, int, int, int, int]]:
    """The distinct depthwise convolutions of a space's MBConv ops, as
    (batch, input side, hidden channels, kernel size, stride), sorted."""

    shapes = set()
    for key in space_keys(space).all_keys().values():
        if key.kind != "op":
            continue
        op = ops.parse_op(key.op)
        if op.is_skip:
            continue
        side, _, channels = key.in_shape
        shapes.add((batch_size, side, channels * op.expansion, op.kernel_size, key.stride))
    return sorted(shapes)


def time_depthwise_gradient(
    batch: int, side: int, channels: int, kernel_size: int, stride: int, runs: int = 7
) -> dict[str, Any]:
    """Median milliseconds of the kernel gradient by TensorFlow's registered
    padding ('same': oneDNN's kernel when oneDNN is on) and by explicit
    padding (TensorFlow's own kernel), their largest difference, and the pick
    of ``eigen_depthwise_kernel_gradient``."""
    import tensorflow as tf

    x = tf.random.stateless_normal((batch, side, side, channels), seed=[0, 1])
    out = -(-side // stride)
    upstream = tf.random.stateless_normal((batch, out, out, channels), seed=[2, 3])
    shape = (kernel_size, kernel_size, channels, 1)

    def same():
        return op_layers.depthwise_kernel_gradient(x, upstream, shape, stride, explicit=False)

    def explicit():
        return op_layers.depthwise_kernel_gradient(x, upstream, shape, stride, explicit=True)

    def median_ms(fn):
        fn().numpy()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn().numpy()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    same_ms, explicit_ms = median_ms(same), median_ms(explicit)
    return {
        "batch": batch,
        "side": side,
        "channels": channels,
        "kernel_size": kernel_size,
        "stride": stride,
        "same_ms": same_ms,
        "explicit_ms": explicit_ms,
        "max_abs_diff": float(np.max(np.abs(same().numpy() - explicit().numpy()))),
        "explicit_chosen": op_layers.eigen_depthwise_kernel_gradient(kernel_size, channels),
    }


def format_depthwise_table(rows: list[dict[str, Any]], onednn: bool) -> str:
    lines = [
        "| batch | input | channels | kernel | stride | 'same' padding ms | explicit padding ms "
        "| same / explicit | used |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["same_ms"] / r["explicit_ms"]
        lines.append(
            f"| {r['batch']} | {r['side']}x{r['side']} | {r['channels']} | {r['kernel_size']} "
            f"| {r['stride']} | {r['same_ms']:.2f} | {r['explicit_ms']:.2f} | {ratio:.2f} "
            f"| {'explicit' if r['explicit_chosen'] else 'same'} |"
        )
    chosen = [r for r in rows if r["explicit_chosen"]]
    total = sum(min(r["same_ms"], r["explicit_ms"]) for r in rows)
    used = sum(r["explicit_ms"] if r["explicit_chosen"] else r["same_ms"] for r in rows)
    same_total = sum(r["same_ms"] for r in rows)
    lines.append("")
    lines.append(
        f"oneDNN kernels: {'on' if onednn else 'off'}; {len(chosen)} of {len(rows)} shapes "
        f"take explicit padding; summed over the shapes: 'same' everywhere "
        f"{same_total:.1f} ms, as chosen {used:.1f} ms, the faster of each {total:.1f} ms"
    )
    return "\n".join(lines)
