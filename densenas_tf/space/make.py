"""A search space made for a dataset: its image size, channels and classes.

``make_space_config(input_size, channels, num_classes, like=...)`` gives the
config of a space of the same kind as the preset (or space file) ``like``:
its stem, op sets, connections, stacking depth and width range, with the
stem stride, the feature-map sizes and the down-sampling stages fitted to
the images, and a head of ``num_classes``.

The images are halved while the size is even and the half is at least
``MIN_FINAL_SIZE`` pixels, at most ``MAX_HALVINGS`` times (28 -> 14 -> 7;
40 -> 20 -> 10 -> 5; 64 -> ... -> 4; 224 -> 112 -> ... -> 7). When the
preset itself halves its images that many times (``fashion_mnist`` at 28,
``imagenet_mbv2`` at 224), its blocks are kept as they are, their sizes
scaled to the images. Otherwise the stem keeps the full size (it halves it
first from ``MAX_HALVINGS`` halvings on, as ImageNet's does), and each further
resolution gets a stage of as many blocks as the preset's stages hold on
average (3 for ``fashion_mnist`` and ``imagenet_mbv2``, 2 for ``tiny``), the
last one two stages (as both presets end), widths rising geometrically over
the preset's range. ``space_yaml`` writes a config in the presets' layout. Pure Python: no
TensorFlow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from densenas_tf.core.files import write_text_atomic
from densenas_tf.space.spaces import SearchSpace, SearchSpaceError, load_space

# The smallest feature map a halving may make, and the most halvings (ImageNet's 224 -> 7).
MIN_FINAL_SIZE = 4
MAX_HALVINGS = 5
# Generated widths are multiples of this.
WIDTH_STEP = 4


class MakeSpaceError(SearchSpaceError):
    """A request for a space that cannot be made; the message names the fix."""


def halvings(input_size: int) -> int:
    """How often images of ``input_size`` are halved (see the module doc)."""
    count, size = 0, input_size
    while count < MAX_HALVINGS and size % 2 == 0 and size // 2 >= MIN_FINAL_SIZE:
        size //= 2
        count += 1
    return count


def _suggested_size(input_size: int) -> int:
    return max(4 * MIN_FINAL_SIZE, -(-input_size // 4) * 4)


def check_request(input_size: Any, channels: Any, num_classes: Any) -> None:
    """Refuses image sizes that cannot be down-sampled, channels other than 1
    or 3, and fewer than two classes, each in one line naming the fix."""
    for value, what in ((input_size, "input size"), (num_classes, "class count")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise MakeSpaceError(f"the {what} must be an integer, got {value!r}")
    if num_classes < 2:
        raise MakeSpaceError(
            f"the data have {num_classes} class(es); a classifier needs at least two classes "
            "(an image folder: one sub-folder of images per class)"
        )
    if channels not in (1, 3):
        raise MakeSpaceError(f"channels must be 1 (grayscale) or 3 (colour), got {channels!r}")
    if input_size < 1 or halvings(input_size) == 0:
        raise MakeSpaceError(
            f"images of {input_size}x{input_size} pixels are too small or odd to down-sample "
            f"(a space halves them at least once, to maps of at least {MIN_FINAL_SIZE} "
            f"pixels: an even size of at least {2 * MIN_FINAL_SIZE}); resize them, e.g. "
            f"--input_size={_suggested_size(max(input_size, 1))} here and "
            f"--image_size={_suggested_size(max(input_size, 1))} for the search and training"
        )


def _template_halvings(template: SearchSpace) -> tuple[int, int]:
    """(stem stride, halvings after the stem) of a space."""
    sizes = [b.feature_map_size for b in template.blocks]
    return template.stem.stride, round(math.log2(sizes[0] / sizes[-1]))


def blocks_per_stage(template: SearchSpace) -> int:
    """The searchable blocks per searchable stage of a space, rounded (at least 1)."""
    return max(1, round((template.num_blocks - 1) / max(template.num_stages - 1, 1)))


def _widths(low: int, high: int, count: int) -> list[int]:
    """``count`` increasing multiples of WIDTH_STEP, geometric from low to high."""
    widths: list[int] = []
    for i in range(count):
        value = low * (high / low) ** (i / max(count - 1, 1))
        width = max(WIDTH_STEP, round(value / WIDTH_STEP) * WIDTH_STEP)
        if widths and width <= widths[-1]:
            width = widths[-1] + WIDTH_STEP
        widths.append(width)
    return widths


def make_space_config(
    input_size: int,
    channels: int,
    num_classes: int,
    like: str | os.PathLike = "fashion_mnist",
    name: str | None = None,
) -> dict[str, Any]:
    """The config of a space like ``like`` for square images of ``input_size``
    pixels with ``channels`` channels in ``num_classes`` classes (module doc).
    The config is validated (``SearchSpace.from_config``) before it is returned."""
    check_request(input_size, channels, num_classes)
    template = load_space(like)
    config = template.to_config()
    config["name"] = name or f"{template.name}_{input_size}x{input_size}x{channels}_{num_classes}"
    config["input_shape"] = [input_size, input_size, channels]
    config["num_classes"] = num_classes
    total = halvings(input_size)
    stem_stride, after = _template_halvings(template)
    template_total = after + (stem_stride == 2)
    if total == template_total:  # the preset's own blocks, sizes scaled to the images
        scale = template.input_shape[0]
        config["blocks"]["feature_map_sizes"] = [
            input_size // (scale // b.feature_map_size) for b in template.blocks
        ]
    else:
        config["stem"]["stride"] = 2 if total >= MAX_HALVINGS else 1
        config["blocks"] = _generated_blocks(template, input_size, total)
        config["connections_per_stage"] = [max(template.connections_per_stage)] * (
            config["blocks"]["stages"][-1] + 1
        )
    SearchSpace.from_config(config, source=f"the space made like {str(like)!r}")
    return config


def _generated_blocks(template: SearchSpace, input_size: int, total: int) -> dict[str, list[int]]:
    """Block lists for ``total`` halvings: the stem's stride, then one stage per
    further resolution, two at the last (module doc)."""
    stem_stride = 2 if total >= MAX_HALVINGS else 1
    after = total - (stem_stride == 2)
    size = input_size // stem_stride
    per_stage = blocks_per_stage(template)
    sizes, stages = [size], [0]
    for level in range(1, after + 1):
        size //= 2
        for _ in range(2 if level == after else 1):
            stage = stages[-1] + 1
            sizes += [size] * per_stage
            stages += [stage] * per_stage
    layer_counts = [b.stacking_layers for b in template.blocks]
    depth, last_depth = max(layer_counts), layer_counts[-1]
    last_stage = stages[-1]
    layers = [0] + [last_depth if s == last_stage else depth for s in stages[1:]]
    widths = [b.width for b in template.blocks]
    return {
        "widths": _widths(min(widths), max(widths), len(sizes)),
        "feature_map_sizes": sizes,
        "stages": stages,
        "stacking_layers": layers,
    }


def _flow(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def space_yaml(config: Mapping[str, Any], comment: str = "") -> str:
    """The config as YAML in the presets' layout (one line per list), with
    ``comment`` as leading ``#`` lines."""
    blocks, stem = config["blocks"], config["stem"]
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [
        f"name: {config['name']}",
        f"input_shape: {_flow(config['input_shape'])}",
        f"num_classes: {config['num_classes']}",
        f"stem: {{conv_width: {stem['conv_width']}, stride: {stem['stride']}, op: {stem['op']}}}",
        "blocks:",
        f"  widths:            {_flow(blocks['widths'])}",
        f"  feature_map_sizes: {_flow(blocks['feature_map_sizes'])}",
        f"  stages:            {_flow(blocks['stages'])}",
        f"  stacking_layers:   {_flow(blocks['stacking_layers'])}",
        f"connections_per_stage: {_flow(config['connections_per_stage'])}",
        f"head_ops: {_flow(config['head_ops'])}",
        f"stacking_ops: {_flow(config['stacking_ops'])}",
        f"final_conv_width: {config['final_conv_width']}",
    ]
    return "\n".join(lines) + "\n"


def write_space(
    path: str | os.PathLike, config: Mapping[str, Any], comment: str = "", overwrite: bool = False
) -> SearchSpace:
    """Writes the config atomically as YAML and loads it back (the space the
    file holds). An existing file is refused unless ``overwrite``."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise MakeSpaceError(f"{path}: a space file must end in .yaml (or .yml)")
    if path.is_dir():
        raise MakeSpaceError(f"{path} is a directory; give a .yaml file")
    if path.exists() and not overwrite:
        raise MakeSpaceError(f"{path} exists; pick another file or pass --overwrite to replace it")
    write_text_atomic(path, space_yaml(config, comment))
    return load_space(path)
