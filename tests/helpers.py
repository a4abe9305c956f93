"""Helpers shared by the test files: the checkout's root, running its scripts in
a fresh Python, small search spaces and made-up latency tables, and figures the
tests compute on their own (a net's latency read from a table file, a model's
accuracy). Fixtures live in conftest.py; this module is imported by name
(``from helpers import ...``: pytest puts tests/ on the path, as a script run
of a test file does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# ----- scripts in a fresh Python ------------------------------------------------------


def python_env(**extra: str) -> dict[str, str]:
    """This environment, importing this checkout first, quiet and on the CPU
    (as conftest.py sets it up here), with ``extra`` on top."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env.update(extra)
    return env


def run_python(
    script: str | Path, *args: str, timeout: float = 600, before: str = "", cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Runs ``script`` (a path, or one relative to the checkout's root) with
    ``args`` in a fresh Python, from the root; captures its text output. With
    ``before``, that code runs first, in the script's own process."""
    script = str(ROOT / script)
    if before:
        code = (
            f"import runpy, sys\n{before}\n"
            f"sys.argv = {[script, *map(str, args)]!r}\n"
            f"runpy.run_path({script!r}, run_name='__main__')\n"
        )
        command = [sys.executable, "-c", code]
    else:
        command = [sys.executable, script, *map(str, args)]
    return subprocess.run(
        command, cwd=cwd, env=python_env(), capture_output=True, text=True, timeout=timeout
    )


def run_tool(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs the binary tools/<name>.py with ``args`` (see run_python)."""
    return run_python(f"tools/{name}.py", *args, timeout=timeout)


# ----- small search spaces ---------------------------------------------------------------

TWO_HEAD_OPS = ("mbconv_k3_e3", "mbconv_k5_e3")
TWO_STACKING_OPS = ("mbconv_k3_e3", "skip")


def micro_space(
    name: str,
    widths: list[int],
    feature_map_sizes: list[int],
    stages: list[int],
    stacking_layers: list[int],
    *,
    num_classes: int = 10,
    final_conv_width: int = 32,
    head_ops=TWO_HEAD_OPS,
    stacking_ops=TWO_STACKING_OPS,
) -> dict:
    """The config of a small space of square one-channel images as large as its
    first block's maps: a 3x3 stem as wide as the first block with a k3 e1 op,
    two connections out of every stage, two ops per layer by default."""
    size = feature_map_sizes[0]
    return {
        "name": name,
        "input_shape": [size, size, 1],
        "num_classes": num_classes,
        "stem": {"conv_width": widths[0], "stride": 1, "op": "mbconv_k3_e1"},
        "blocks": {
            "widths": list(widths),
            "feature_map_sizes": list(feature_map_sizes),
            "stages": list(stages),
            "stacking_layers": list(stacking_layers),
        },
        "connections_per_stage": [2] * (max(stages) + 1),
        "head_ops": list(head_ops),
        "stacking_ops": list(stacking_ops),
        "final_conv_width": final_conv_width,
    }


def write_space(folder: Path, config: dict, name: str | None = None) -> Path:
    """A space config written as YAML in folder (as <its name>.yaml by default)."""
    import yaml

    path = Path(folder) / (name or f"{config['name']}.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


# ----- made-up latency tables -----------------------------------------------------------


def made_up_table(
    space,
    ms: Callable[[int, str], float],
    *,
    overhead_ms: float = 0.0,
    std_ms: float = 0.0,
    count: int = 1,
    device: str = "synthetic",
    versions: dict | None = None,
    sort_keys: bool = False,
):
    """A latency table of no device covering ``space``: entry k (in the order
    of space_keys(space).all_keys(), or sorted) of key ``key`` takes
    ``ms(k, key)`` as its median and mean. For checking arithmetic, not for
    measuring anything."""
    from densenas_tf.latency.table import LatencyEntry, LatencyTable, new_provenance, space_keys

    provenance = new_provenance(space, "tflite", 1, 1, device, dict(versions or {}))
    table = LatencyTable(provenance, overhead_ms=overhead_ms)
    keys = space_keys(space).all_keys()
    for k, key in enumerate(sorted(keys) if sort_keys else keys):
        median = float(ms(k, key))
        table.entries[key] = LatencyEntry(median, median, std_ms, count)
    return table


# ----- figures computed here, not by the code under test -----------------------------------


def table_prediction_ms(spec, table_file: str | Path) -> float:
    """A net's latency by a table file, read as its format says: the overhead
    once, plus each piece's entry less the overhead (skips cost nothing)."""
    table = json.loads(Path(table_file).read_text())
    overhead, entries = table["overhead_ms"], table["entries"]
    h, w, c = spec.input_shape
    stem = spec.stem
    keys = [f"stem/c{stem.conv_width}s{stem.stride}+{stem.op}/i{h}x{w}x{c}/o{stem.width}"]
    size = -(-h // stem.stride)
    for block in spec.blocks:
        keys.append(
            f"{block.head_op}/i{size}x{size}x{block.in_width}/s{block.stride}/o{block.width}"
        )
        size = -(-size // block.stride)
        keys += [
            f"{op}/i{size}x{size}x{block.width}/s1/o{block.width}"
            for op in block.stacking_ops
            if op != "skip"
        ]
    final = spec.final_conv_width
    keys.append(f"final_conv/i{size}x{size}x{spec.blocks[-1].width}/o{final}")
    keys.append(f"classifier/i{size}x{size}x{final}/o{spec.num_classes}")
    return overhead + sum(max(entries[k]["median_ms"] - overhead, 0.0) for k in keys)


def keras_accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of a pixels -> logits model (or its saved file), in
    batches of 256 (as the training's test; a batch's size can change a
    near-tie's rounding)."""
    if isinstance(model, (str, Path)):
        import keras

        model = keras.models.load_model(model)
    hits = 0
    for i in range(0, len(images), 256):
        logits = model(images[i : i + 256].astype(np.float32), training=False)
        hits += int(np.sum(np.argmax(np.asarray(logits), -1) == labels[i : i + 256]))
    return hits / len(labels)


def short_search_config(space_file, table_file, train_limit: int, arch_fraction: float):
    """A two-epoch search (one warm-up epoch, eager steps, no table check)
    of a small space on real Fashion-MNIST images, against ``table_file``."""
    from densenas_tf.search.config import SearchConfig

    return SearchConfig.from_dict(
        {
            "space": str(space_file),
            "latency_table": str(table_file),
            "data": {"train_limit": train_limit, "arch_fraction": arch_fraction},
            "batch_size": 32,
            "epochs": 2,
            "warmup_epochs": 1,
            "latency_check": False,
            "deterministic": False,
            "graph_steps": False,
        }
    )
