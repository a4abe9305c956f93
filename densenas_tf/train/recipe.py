"""Training recipes: a YAML/JSON file of TrainConfig values and a data source.

A recipe (``configs/train/<name>.yaml`` or any file) holds a ``train`` mapping
of ``train.TrainConfig`` fields and a ``data`` mapping of data-source keys (the
names of ``data.streaming.SOURCE_KEYS``), so that a published schedule such as the paper's
ImageNet retraining is one file rather than a dozen flags.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from densenas_tf.data.sources import SOURCE_KEYS, DataError
from densenas_tf.space.spaces import CONFIG_DIR, read_config_file
from densenas_tf.train.trainer import TrainConfig

TRAIN_CONFIGS_DIR = CONFIG_DIR / "train"


def load_train_recipe(name_or_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig values, data-source values) of a preset name or a recipe file."""

    path = Path(name_or_path)
    if not path.is_file():
        path = TRAIN_CONFIGS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            presets = sorted(p.stem for p in TRAIN_CONFIGS_DIR.glob("*.yaml"))
            raise DataError(
                f"unknown training recipe {name_or_path!r}; presets are {presets}, or pass a file"
            )
    recipe = read_config_file(path) or {}
    unknown = sorted(set(recipe) - {"train", "data"})
    if unknown:
        raise DataError(f"{path}: unknown section {unknown[0]!r}; the sections are train, data")
    train = dict(recipe.get("train") or {})
    data = dict(recipe.get("data") or {})
    fields = sorted(f.name for f in dataclasses.fields(TrainConfig))
    for key in train:
        if key not in fields:
            raise DataError(f"{path}: unknown field 'train.{key}'; the fields are {fields}")
    for key in data:
        if key not in SOURCE_KEYS:
            raise DataError(
                f"{path}: unknown field 'data.{key}'; the fields are {list(SOURCE_KEYS)}"
            )
    TrainConfig(**train)  # its rules checked now, not after the data are read
    return train, data
