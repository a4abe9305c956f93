"""Machine-readable summaries of a search space or an architecture (no TensorFlow)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from densenas_tf.space import ops
from densenas_tf.space.arch_spec import ArchSpec, count_costs
from densenas_tf.space.spaces import SearchSpace


def _trainable(op_name: str, cin: int, cout: int) -> int:
    return ops.op_param_count(op_name, cin, cout) - 2 * ops.op_bn_channels(op_name, cin, cout)


def supernet_weight_params(space: SearchSpace) -> int:
    """Trainable weights of the whole supernet (every candidate op), counted analytically."""
    stem = space.stem
    count = ops.conv_param_count(space.input_shape[2], stem.conv_width, 3) - 2 * stem.conv_width
    count += _trainable(stem.op, stem.conv_width, stem.width)
    for edge in space.head_edges:
        cin, cout = space.blocks[edge.src].width, space.blocks[edge.dst].width
        count += sum(_trainable(op, cin, cout) for op in space.head_ops)
    for layer in space.stacking_layers:
        width = space.blocks[layer.block].width
        count += sum(_trainable(op, width, width) for op in space.stacking_ops)
    for edge in space.final_edges:
        cin = space.blocks[edge.src].width
        count += ops.conv_param_count(cin, space.final_conv_width, 1) - 2 * space.final_conv_width
    count += space.final_conv_width * space.num_classes + space.num_classes
    return count


def uniform_sampled_mult_adds(space: SearchSpace) -> int:
    """Expected multiply-adds per image of a one-op-per-layer supernet forward,
    ops drawn uniformly (every incoming edge's head layer runs, as in search)."""
    head = np.full((len(space.head_edges), len(space.head_ops)), 1.0 / len(space.head_ops))
    stack = np.full(
        (len(space.stacking_layers), len(space.stacking_ops)), 1.0 / len(space.stacking_ops)
    )
    return round(supernet_mult_adds(space, head, stack))


def supernet_mult_adds(space: SearchSpace, head_counts, stack_counts) -> float:
    """Multiply-adds per image of a supernet forward in which op o of head row r
    runs head_counts[r, o] times (1 or 0 for a drawn sample, 1 everywhere for
    the all-ops forward, 1/n for the uniform expectation); likewise stacking rows."""
    head_counts, stack_counts = np.asarray(head_counts), np.asarray(stack_counts)
    stem = space.stem
    size = space.blocks[0].feature_map_size
    total = ops.conv_mult_adds(space.input_shape[2], stem.conv_width, 3, size)
    total += ops.op_mult_adds(stem.op, stem.conv_width, stem.width, size, 1)
    for edge in space.head_edges:
        src, dst = space.blocks[edge.src], space.blocks[edge.dst]
        row = head_counts[space.head_row(edge)]
        for op, count in zip(space.head_ops, row):
            if count:
                cost = ops.op_mult_adds(op, src.width, dst.width, src.feature_map_size, edge.stride)
                total += count * cost
    for row, layer in zip(stack_counts, space.stacking_layers):
        block = space.blocks[layer.block]
        for op, count in zip(space.stacking_ops, row):
            if count:
                total += count * ops.op_mult_adds(
                    op, block.width, block.width, block.feature_map_size, 1
                )
    for edge in space.final_edges:
        src = space.blocks[edge.src]
        total += ops.conv_mult_adds(src.width, space.final_conv_width, 1, src.feature_map_size)
    total += space.final_conv_width * space.num_classes
    return float(total)


def arch_param_count(space: SearchSpace) -> int:
    """Entries of alpha_head, alpha_stack and beta."""
    return (
        len(space.head_edges) * len(space.head_ops)
        + len(space.stacking_layers) * len(space.stacking_ops)
        + len(space.edges)
    )


def describe_space(space: SearchSpace) -> dict[str, Any]:
    return {
        "name": space.name,
        "fingerprint": space.fingerprint(),
        "input_shape": list(space.input_shape),
        "num_classes": space.num_classes,
        "blocks": [
            {
                "index": b.index,
                "width": b.width,
                "feature_map_size": b.feature_map_size,
                "stage": b.stage,
                "stacking_layers": b.stacking_layers,
            }
            for b in space.blocks
        ],
        "final_node": space.final_node,
        "final_conv_width": space.final_conv_width,
        "edges": [[e.src, e.dst, e.stride] for e in space.edges],
        "num_edges": len(space.edges),
        "out_degrees": list(space.out_degrees()),
        "num_paths": len(space.enumerate_paths()),
        "head_ops": list(space.head_ops),
        "stacking_ops": list(space.stacking_ops),
        "arch_params": arch_param_count(space),
        "weight_params": supernet_weight_params(space),
        "uniform_sampled_mult_adds": uniform_sampled_mult_adds(space),
    }


def resize_arch(
    spec: ArchSpec, input_size: int | None = None, num_classes: int | None = None
) -> ArchSpec:
    """The same net at another square input size and/or number of classes."""
    shape = spec.input_shape
    if input_size is not None:
        shape = (input_size, input_size, shape[2])
    return dataclasses.replace(spec, input_shape=shape, num_classes=num_classes or spec.num_classes)


def describe_arch(spec: ArchSpec) -> dict[str, Any]:
    cost = count_costs(spec)
    return {
        "name": spec.name,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "params": cost.params,
        "total_params": cost.total_params,
        "mult_adds": cost.mult_adds,
        "num_blocks": len(spec.blocks),
        "num_layers": 1 + sum(1 + len(b.stacking_ops) for b in spec.blocks),
        "block_string": spec.to_block_string(),
    }


# The notation of ArchSpec block strings, explained once beside each architecture.
NOTATION = (
    "Notation: `kKeE` is an MBConv with a KxK depthwise kernel and expansion ratio E "
    "(`k3e1` in the stem has no expansion); `sS` is the stride of the block's first "
    "layer; `8>24` a block from 8 to 24 channels; the ops in brackets are the "
    "block's stacking layers (stride 1, with a skip connection)."
)


def architecture_markdown(spec, title: str = "") -> str:
    """The ArchSpec as a small Markdown table with the notation explained once."""

    def short(op: str) -> str:
        return ops.parse_op(op).short_name

    h, w, c = spec.input_shape
    stem = spec.stem
    rows = [
        f"| stem | {c}>{stem.conv_width}>{stem.width} | conv3x3 s{stem.stride}, "
        f"{short(stem.op)} | |"
    ]
    for k, block in enumerate(spec.blocks, start=1):
        stack = ", ".join(short(op) for op in block.stacking_ops) or "-"
        rows.append(
            f"| {k} | {block.in_width}>{block.width} | {short(block.head_op)} "
            f"s{block.stride} | {stack} |"
        )
    rows.append(f"| final | {spec.blocks[-1].width}>{spec.final_conv_width} | conv1x1 | |")
    lines = [
        f"**{title or spec.name}**: {h}x{w}x{c} input, {spec.num_classes} classes",
        "",
        "| block | channels | head op, stride | stacking ops |",
        "|---|---|---|---|",
        *rows,
        "",
        f"`{spec.to_block_string()}`",
        "",
        NOTATION,
    ]
    return "\n".join(lines)
