"""The search's configuration: every hyper-parameter, with SPEC section 4 defaults.

Read from YAML/JSON, overridable by ``key=value`` strings (dotted keys reach
into ``objective`` and ``data``), validated, and written into the run
directory so that a resumed run can prove it is the same run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from densenas_tf.search_space import CONFIG_DIR, read_config_file

SEARCH_CONFIGS_DIR = CONFIG_DIR / "search"


class ConfigError(ValueError):
    """A search config that breaks a rule; the message names the field."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_limit: int | None = None  # use only the first N training images (after a seeded shuffle)
    arch_fraction: float = 0.2


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    space: str = "fashion_mnist"
    latency_table: str | None = None  # default: the shipped tflite/1-thread/batch-1 table
    objective: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"kind": "paper", "lam": 0.15, "tau_ms": 15.0}
    )
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = 128  # global batch
    epochs: int = 150
    warmup_epochs: int = 50
    weight_lr: float = 0.2
    weight_lr_min: float = 1e-5
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3
    label_smoothing: float = 0.1
    seed: int = 0
    checkpoint_every_steps: int = 200
    # float16 compute (Keras mixed_float16) with float32 alpha, beta, softmaxes and
    # latency, and dynamic loss scaling; for GPUs (float16 is slow on CPUs).
    mixed_precision: bool = False

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(
                f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.checkpoint_every_steps < 1:
            raise ConfigError("checkpoint_every_steps must be at least 1")
        for name in ("weight_lr", "arch_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not isinstance(self.mixed_precision, bool):
            raise ConfigError(
                f"mixed_precision must be true or false, got {self.mixed_precision!r}"
            )
        from densenas_tf.objectives import Objective

        try:
            Objective.from_config(self.objective)
        except ValueError as err:
            raise ConfigError(f"objective: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["objective"] = dict(self.objective)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "search config") -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown field {unknown[0]!r}; the fields are {sorted(known)}"
            )
        values = dict(data)
        if "data" in values:
            data_known = {f.name for f in dataclasses.fields(DataConfig)}
            bad = sorted(set(values["data"]) - data_known)
            if bad:
                raise ConfigError(
                    f"{source}: unknown field 'data.{bad[0]}'; the fields are {sorted(data_known)}"
                )
            values["data"] = DataConfig(**values["data"])
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from None


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Applies ``key=value`` overrides (values parsed as JSON when they parse)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
        target[parts[-1]] = _parse_value(text)
    return data


def load_search_config(name_or_path: str | None, overrides: Sequence[str] = ()) -> SearchConfig:
    """A preset from configs/search/ by name, a YAML/JSON file, or (None) the defaults."""
    data: dict[str, Any] = {}
    source = "defaults"
    if name_or_path:
        from pathlib import Path

        path = Path(name_or_path)
        if not path.is_file():
            preset = SEARCH_CONFIGS_DIR / f"{name_or_path}.yaml"
            if not preset.is_file():
                presets = sorted(p.stem for p in SEARCH_CONFIGS_DIR.glob("*.yaml"))
                raise ConfigError(f"unknown search config {name_or_path!r}; presets are {presets}")
            path = preset
        data = read_config_file(path)
        source = str(path)
    return SearchConfig.from_dict(apply_overrides(data, overrides), source)
