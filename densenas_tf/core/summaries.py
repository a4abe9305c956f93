"""TensorBoard summaries of the search and the retraining: one tag per meaning,
each with a description and unit, the global step on the x-axis.

Prefixes, one per phase or subject:

- ``weight_step/``: the search's weight steps (every ``summary_every_steps``);
- ``arch_step/``: the search's architecture steps (every one; none in warm-up);
- ``latency/``: the latency the search optimises and predicts, in ms;
- ``eval/``: the supernet evaluated on the architecture split (each epoch);
- ``derived/``: the net derived at the end of each epoch (margins, costs,
  architecture, the supernet picture);
- ``arch_params/``: alpha and beta (histograms, normalised entropies, heatmaps);
- ``train/`` and ``test/``: the retraining of a derived net.

``TAGS`` is the one table of names and descriptions; tests read it back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# tag -> description (with its unit). Every scalar, text and image goes through it.
TAGS: dict[str, str] = {
    # the search, per step
    "weight_step/cross_entropy": "Cross-entropy of one weight step's batch (one drawn op "
    "per mixed layer), nats.",
    "weight_step/accuracy": "Top-1 accuracy of one weight step's batch, fraction in [0, 1].",
    "weight_step/learning_rate": "SGD learning rate of the supernet's weights at this step "
    "(cosine schedule).",
    "weight_step/loss_scale": "Dynamic loss scale under mixed precision.",
    "arch_step/cross_entropy": "Cross-entropy of one architecture step's batch (two drawn "
    "ops per mixed layer), nats.",
    "arch_step/loss": "The architecture step's objective: cross-entropy plus the latency "
    "term, nats.",
    "arch_step/latency_term": "The latency term of the objective (loss minus cross-entropy), nats.",
    "arch_step/accuracy": "Top-1 accuracy of one architecture step's batch, fraction.",
    "arch_step/alpha_learning_rate": "Adam learning rate of alpha (op weights).",
    "arch_step/beta_learning_rate": "Adam learning rate of beta (path weights).",
    "arch_step/loss_scale": "Dynamic loss scale under mixed precision.",
    # latency
    "latency/step_expected_ms": "Expected latency in the architecture step's objective "
    "(its two drawn ops per layer, path probabilities), ms.",
    "latency/expected_ms": "Expected latency of the whole supernet under softmax(alpha) "
    "and the path probabilities at the end of the epoch, ms.",
    "latency/derived_predicted_ms": "Latency of the net derived at the end of the epoch, "
    "predicted by the latency table, ms.",
    "latency/step_derived_ms": "Predicted latency of the net the paper's derivation gives "
    "after this architecture step (what the budget controller steers by), ms.",
    "latency/budget_ms": "The latency budget the derived net must meet (objective kind "
    "budget), ms.",
    "latency/weight": "The latency weight of the objective in force at this step (the budget "
    "controller moves it: up while the expected latency is above the budget, down below).",
    # per epoch
    "eval/supernet_accuracy": "The supernet's accuracy on the architecture split at the "
    "end of the epoch (one path per batch drawn as in the weight step, BN in training "
    "mode), fraction.",
    "eval/supernet_cross_entropy": "The supernet's cross-entropy on the architecture split "
    "at the end of the epoch, nats.",
    "derived/path_margin": "Log-probability of the derived path minus the runner-up "
    "path's (0 = tie; log 2 = 0.693 under uniform beta).",
    "derived/min_op_margin": "Smallest alpha log-odds margin of a chosen op over the next "
    "op of its layer (0 = tie).",
    "derived/near_ties": "Decisions of the derived net whose margin is below the "
    "configured tie threshold, count.",
    "derived/params": "Parameters of the derived net, count.",
    "derived/mult_adds": "Multiply-adds of the derived net per image, count.",
    "derived/architecture": "The derived net, block by block.",
    "derived/supernet": "The supernet: blocks by resolution (bands) and width (height), "
    "edges shaded by path probability, the derived path in red with its ops.",
    "arch_params/alpha_head": "Head-layer op logits (alpha), all layers and ops.",
    "arch_params/alpha_stack": "Stacking-layer op logits (alpha), all layers and ops.",
    "arch_params/beta": "Path logits (beta), all edges.",
    "arch_params/entropy_head_ops": "Mean entropy of the head layers' op probabilities, "
    "normalised: 1 = uniform, 0 = one op certain.",
    "arch_params/entropy_stacking_ops": "Mean entropy of the stacking layers' op "
    "probabilities, normalised: 1 = uniform, 0 = one op certain.",
    "arch_params/entropy_paths": "Mean entropy of each block's outgoing path "
    "probabilities, normalised: 1 = uniform, 0 = one edge certain.",
    "arch_params/head_ops": "Op probabilities of every head layer (rows: the edge "
    "src->dst it sits on; columns: ops).",
    "arch_params/stacking_ops": "Op probabilities of every stacking layer (rows: block and "
    "position; columns: ops).",
    "arch_params/paths": "Path probabilities: rows the source block, columns the target "
    "block (blank: no edge).",
    # the retraining
    "train/loss": "Training loss of one batch (cross-entropy with label smoothing), nats.",
    "train/accuracy": "Training accuracy of one batch, fraction.",
    "train/learning_rate": "SGD learning rate at this step (cosine schedule).",
    "train/epoch_loss": "Mean training loss over the epoch, nats.",
    "train/epoch_accuracy": "Mean training accuracy over the epoch, fraction.",
    "train/architecture": "The net being trained, block by block.",
    "train/config": "The training run's configuration.",
    "test/accuracy": "Top-1 accuracy on the test images after training, fraction.",
}

# Search losses, accuracies and latency on one TensorBoard page (custom scalars).
SEARCH_LAYOUT = {
    "search": {
        "loss (nats)": [
            r"weight_step/cross_entropy",
            r"arch_step/cross_entropy",
            r"arch_step/loss",
            r"eval/supernet_cross_entropy",
        ],
        "accuracy": [
            r"weight_step/accuracy",
            r"arch_step/accuracy",
            r"eval/supernet_accuracy",
        ],
        "latency (ms)": [r"latency/.*"],
        "decisions": [r"derived/path_margin", r"derived/min_op_margin"],
    }
}


def description(tag: str) -> str:
    try:
        return TAGS[tag]
    except KeyError:
        raise KeyError(f"summary tag {tag!r} is not in densenas_tf.core.summaries.TAGS") from None


def scalar(tag: str, value: float, step: int) -> None:
    import tensorflow as tf

    tf.summary.scalar(tag, float(value), step=step, description=description(tag))


def text(tag: str, markdown: str, step: int) -> None:
    import tensorflow as tf

    tf.summary.text(tag, markdown, step=step, description=description(tag))


def image_png(tag: str, png: bytes, step: int) -> None:
    import tensorflow as tf

    image = tf.io.decode_png(png, channels=3)[None]
    tf.summary.image(tag, image, step=step, description=description(tag))


def normalised_entropy(probs: np.ndarray) -> float:
    """Mean over rows of the entropy divided by log(row length): 1 for uniform rows,
    0 for one-hot rows; rows of length 1 count as 0."""
    probs = np.atleast_2d(np.asarray(probs, np.float64))
    if probs.size == 0 or probs.shape[-1] < 2:
        return 0.0
    p = np.clip(probs, 1e-12, 1.0)
    return float((-(p * np.log(p)).sum(axis=-1) / math.log(probs.shape[-1])).mean())


def config_markdown(config: Mapping[str, Any]) -> str:
    """A flat two-column Markdown table of a (nested) config."""

    def flat(prefix: str, value: Any):
        if isinstance(value, Mapping):
            for key, item in value.items():
                yield from flat(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            yield prefix, value

    rows = [f"| {key} | `{value}` |" for key, value in flat("", config)]
    return "\n".join(["| key | value |", "|---|---|", *rows])


def write_layout(writer, layout: Mapping[str, Mapping[str, list[str]]]) -> None:
    """A custom-scalars page: one category per key, one chart per title, each chart
    the tags matching its regular expressions."""
    import tensorflow as tf
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as custom_scalar

    categories = []
    for category, charts in layout.items():
        categories.append(
            layout_pb2.Category(
                title=category,
                chart=[
                    layout_pb2.Chart(
                        title=title,
                        multiline=layout_pb2.MultilineChartContent(tag=list(tags)),
                    )
                    for title, tags in charts.items()
                ],
            )
        )
    summary = custom_scalar.pb(layout_pb2.Layout(category=categories))
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)
    writer.flush()
