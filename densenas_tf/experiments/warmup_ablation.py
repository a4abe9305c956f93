"""How fast the supernet learns in warm-up under each training choice.

Each variant is a search config with overrides. Its warm-up (weight steps,
one op per layer drawn uniformly) runs for ``max_steps`` steps on the config's
weight split; at the given step counts the supernet is evaluated as the
search evaluates it (``Searcher.evaluate``: sampled single paths on the
architecture split, BN in training mode). Each variant reports its accuracy
at each count and its median seconds per weight step.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from densenas_tf.latency.table import LatencyTable, default_table_path
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search.config import load_search_config
from densenas_tf.search.run import load_search_data
from densenas_tf.search.searcher import Searcher
from densenas_tf.space.spaces import load_space


def run_variant(
    name: str,
    config_name: str,
    overrides: Sequence[str],
    eval_steps: Sequence[int],
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    import keras

    config = load_search_config(config_name, list(overrides))
    space = load_space(config.space)
    table = LatencyTable.load(config.latency_table or default_table_path(space.name))
    weight, arch = load_search_data(config)
    keras.utils.set_random_seed(config.seed)
    net = SuperNet.from_space(
        space, arch_init_seed=config.seed, weight_sharing=config.weight_sharing
    )
    max_steps = max(eval_steps)
    points: dict[int, dict[str, float]] = {}
    times = []
    with tempfile.TemporaryDirectory() as run_dir:
        searcher = Searcher(config, net, table, weight, arch, run_dir, log=log)
        step, epoch = 0, 0
        while step < max_steps:
            for batch in searcher._batches(searcher.weight_data, epoch, 1, 0):
                sample = searcher._sample("uniform")
                start = time.perf_counter()
                values = searcher.steps.weight_step(batch, sample)
                float(values["ce"])
                times.append(time.perf_counter() - start)
                searcher.global_step.assign_add(1)
                step += 1
                if step in eval_steps:
                    points[step] = searcher.evaluate(epoch)
                    log(f"{name}: step {step}: accuracy {points[step]['acc']:.4f}")
                if step >= max_steps:
                    break
            epoch += 1
    return {
        "variant": name,
        "overrides": list(overrides),
        "weight_params": int(sum(np.prod(v.shape) for v in net.weight_variables)),
        "step_s": float(np.median(times[2:] if len(times) > 4 else times)),
        "accuracy": {str(k): v["acc"] for k, v in sorted(points.items())},
        "cross_entropy": {str(k): v["ce"] for k, v in sorted(points.items())},
    }


def format_table(results: list[dict[str, Any]]) -> str:
    steps = sorted({int(k) for r in results for k in r["accuracy"]})
    head = "| variant | weights | s / weight step | " + " | ".join(
        f"acc @ {s} steps" for s in steps
    )
    lines = [head + " |", "|" + "---|" * (3 + len(steps))]
    for r in results:
        cells = [r["variant"], f"{r['weight_params']:,}", f"{r['step_s']:.3f}"]
        cells += [
            f"{100 * r['accuracy'][str(s)]:.1f} %" if str(s) in r["accuracy"] else "-"
            for s in steps
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
