"""A picture of the super network: blocks by resolution and width, edges shaded by
their path probability, the derived path highlighted with its ops labelled."""

from __future__ import annotations

import io

import numpy as np

from densenas_tf.space import ops
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace


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

    fig, ax = plt.subplots(figsize=(max(8.0, 0.8 * len(nodes)), 5.5), dpi=100)
    sizes = sorted({size for *_, size in nodes}, reverse=True)
    for k, size in enumerate(sizes):  # one shaded band per resolution
        members = [x[i] for i, *_, s in nodes if s == size]
        ax.axvspan(
            min(members) - 0.45, max(members) + 0.45, color="0.92" if k % 2 else "0.97", zorder=0
        )
        ax.text((min(members) + max(members)) / 2, 1.0, f"{size}x{size}", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9, color="0.3")  # fmt: skip
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
    for index, *_ in nodes:
        ax.scatter([x[index]], [y[index]], s=90, color="tab:red" if index in path else "white",
                   edgecolors="black", zorder=3)  # fmt: skip
    for block, dst in zip(spec.blocks, path[1:]):
        ops_text = ops.parse_op(block.head_op).short_name + "".join(
            "\n" + ops.parse_op(op).short_name for op in block.stacking_ops
        )
        ax.text(
            x[dst] + 0.15,
            y[dst] - 0.05,
            ops_text,
            fontsize=8,
            color="darkred",
            va="top",
            zorder=4,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )
    ax.set_xticks(
        [x[i] for i, *_ in nodes], [str(i) if i != space.final_node else "final" for i, *_ in nodes]
    )
    widths = sorted({width for _, _, width, _ in nodes})
    ax.set_yticks([np.log2(w) for w in widths], [str(w) for w in widths])
    ax.set_xlabel("block (shaded bands: feature-map size)")
    ax.set_ylabel("width (channels, log scale)")
    ax.set_title(title or f"{space.name}: path probabilities and the derived path", fontsize=10,
                 pad=18)  # fmt: skip
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def heatmap_png(
    matrix: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    colorbar_label: str = "probability",
    row_axis: str = "",
    col_axis: str = "",
) -> bytes:
    """PNG bytes of a labelled heatmap: named rows and columns, each cell's value
    written in it, a colour bar scaled to the data (not to a fixed range), and
    NaN cells (e.g. edges that do not exist) left blank and hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(matrix, np.float64)
    rows, cols = values.shape
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(
            f"heatmap of shape {values.shape} needs {rows} row and {cols} column labels, "
            f"got {len(row_labels)} and {len(col_labels)}"
        )
    masked = np.ma.masked_invalid(values)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high - low < 1e-9:  # a constant map still shows its one value
        low, high = low - 0.5 * max(abs(low), 1e-3), high + 0.5 * max(abs(high), 1e-3)
    fig, ax = plt.subplots(
        figsize=(min(14.0, 2.5 + 0.75 * cols), min(14.0, 1.6 + 0.32 * rows)), dpi=100
    )
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    ax.patch.set_hatch("//")
    ax.patch.set_edgecolor("0.8")
    shown = ax.imshow(masked, cmap=cmap, vmin=low, vmax=high, aspect="auto")
    if rows * cols <= 400:
        middle = (low + high) / 2
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if values[i, j] > middle else "white")  # fmt: skip
    ax.set_xticks(range(cols), col_labels, fontsize=8, rotation=45 if cols > 8 else 0)
    ax.set_yticks(range(rows), row_labels, fontsize=7 if rows > 20 else 8)
    ax.set_xlabel(col_axis)
    ax.set_ylabel(row_axis)
    ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, label=colorbar_label, fraction=0.05)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
