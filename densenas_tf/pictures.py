"""A picture of the super network: blocks by resolution and width, edges shaded by
their path probability, the derived path highlighted with its ops labelled."""

from __future__ import annotations

import io

import numpy as np

from densenas_tf import ops
from densenas_tf.arch_spec import ArchSpec
from densenas_tf.search_space import SearchSpace


def supernet_png(
    space: SearchSpace, path_probs: np.ndarray, spec: ArchSpec, title: str = ""
) -> bytes:
    """PNG bytes of the supernet with the derived path of ``spec`` (provenance 'path')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [(b.index, b.stage, b.width, b.feature_map_size) for b in space.blocks]
    nodes.append(
        (
            space.final_node,
            space.num_stages,
            space.final_conv_width,
            space.blocks[-1].feature_map_size,
        )
    )
    x = {index: float(index) for index, *_ in nodes}
    y = {index: np.log2(width) for index, _, width, _ in nodes}
    path = list(spec.provenance.get("path", []))
    on_path = set(zip(path, path[1:]))

    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(nodes)), 4.5), dpi=110)
    sizes = sorted({size for *_, size in nodes}, reverse=True)
    for k, size in enumerate(sizes):  # one shaded band per resolution
        members = [x[i] for i, *_, s in nodes if s == size]
        ax.axvspan(
            min(members) - 0.45, max(members) + 0.45, color="0.92" if k % 2 else "0.97", zorder=0
        )
        ax.text((min(members) + max(members)) / 2, 1.0, f"{size}x{size}", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color="0.3")  # fmt: skip
    for edge in space.edges:
        p = float(path_probs[edge.index])
        chosen = (edge.src, edge.dst) in on_path
        ax.plot(
            [x[edge.src], x[edge.dst]],
            [y[edge.src], y[edge.dst]],
            color="tab:red" if chosen else "tab:blue",
            alpha=1.0 if chosen else 0.15 + 0.85 * p,
            linewidth=3.0 if chosen else 0.5 + 2.5 * p,
            zorder=2 if chosen else 1,
        )
    for index, _, width, _ in nodes:
        ax.scatter([x[index]], [y[index]], s=90, color="tab:red" if index in path else "white",
                   edgecolors="black", zorder=3)  # fmt: skip
        ax.text(x[index], y[index] - 0.22, str(width), ha="center", va="top", fontsize=7, zorder=4)
    for block, dst in zip(spec.blocks, path[1:]):
        ops_text = ops.parse_op(block.head_op).short_name + "".join(
            "\n" + ops.parse_op(op).short_name for op in block.stacking_ops
        )
        ax.text(
            x[dst] + 0.12,
            y[dst] + 0.12,
            ops_text,
            fontsize=6,
            color="darkred",
            va="bottom",
            zorder=4,
        )
    ax.set_xticks(
        [x[i] for i, *_ in nodes], [str(i) if i != space.final_node else "final" for i, *_ in nodes]
    )
    ax.set_xlabel("block")
    ax.set_ylabel("log2(width)")
    ax.set_title(title or f"{space.name}: path probabilities and the derived path", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
