"""Hand-made nets to compare searched ones against, as ArchSpecs.

``mobilenet_v2_fashion(width)``: a MobileNetV2-like net at Fashion-MNIST's
resolutions (the fashion_mnist space's stem, 14x14 then 7x7 stages, k3 e6
everywhere, final 1x1 conv 192), its widths scaled by ``width``. The main job
takes the measured latency of width 0.75 as its default budget; the
comparison trains it at several widths.
"""

from __future__ import annotations

from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import load_space

MBV2_FASHION = [
    # (width, stride, stacking layers)
    (16, 2, 1),
    (24, 1, 2),
    (32, 2, 2),
    (48, 1, 1),
    (72, 1, 0),
]


def mobilenet_v2_fashion(width: float, num_classes: int = 10) -> ArchSpec:
    """The MobileNetV2-style Fashion-MNIST net with its widths scaled (multiples of 4)."""

    stem = load_space("fashion_mnist").stem
    parts = [f"28x28x1 | stem:c{stem.conv_width}s{stem.stride}+k3e1>{stem.width}"]
    previous = stem.width
    for base, stride, layers in MBV2_FASHION:
        out = max(8, round(base * width / 4.0) * 4)
        stacking = f"[{','.join(['k3e6'] * layers)}]" if layers else ""
        parts.append(f"{previous}>{out}:k3e6s{stride}{stacking}")
        previous = out
    parts += ["final:192", f"classes:{num_classes}"]
    return ArchSpec.from_block_string(" | ".join(parts), name=f"mobilenet_v2_x{width:g}")
