"""Derived models: an ArchSpec becomes a plain Keras Functional model.

The model holds standard Keras layers only, so it saves and loads as
``.keras``, exports and converts with no custom objects. It maps float images
to logits.
"""

from __future__ import annotations

import keras

from densenas_tf.nn import op_layers
from densenas_tf.space.arch_spec import ArchSpec


def build_model(
    spec: ArchSpec,
    dropout_rate: float = 0.0,
    bn_momentum: float = 0.9,
    name: str | None = None,
) -> keras.Model:
    """Builds the derived net: stem, blocks, final 1x1 conv, pooling, classifier."""
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    images = keras.Input(shape=tuple(spec.input_shape), name="image")
    stem_conv = op_layers.make_conv_bn_act_layers(
        spec.stem.conv_width, 3, spec.stem.stride, "stem", bn_momentum
    )
    x = op_layers.apply_conv_bn_act(stem_conv, images)
    stem_op = op_layers.make_op_layers(
        spec.stem.op, spec.stem.conv_width, spec.stem.width, 1, "stem_op", bn_momentum
    )
    x = op_layers.apply_op_layers(stem_op, x)
    for i, block in enumerate(spec.blocks, start=1):
        head = op_layers.make_op_layers(
            block.head_op,
            block.in_width,
            block.width,
            block.stride,
            f"b{i}_head",
            bn_momentum,
        )
        x = op_layers.apply_op_layers(head, x)
        for j, op in enumerate(block.stacking_ops, start=1):
            layer = op_layers.make_op_layers(
                op, block.width, block.width, 1, f"b{i}_l{j}", bn_momentum
            )
            x = op_layers.apply_op_layers(layer, x)
    final = op_layers.make_conv_bn_act_layers(spec.final_conv_width, 1, 1, "final", bn_momentum)
    x = op_layers.apply_conv_bn_act(final, x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    logits = keras.layers.Dense(spec.num_classes, name="logits")(x)
    return keras.Model(images, logits, name=name or spec.name or "derived")
