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

from densenas_tf.errors import DenseNASError
from densenas_tf.search_space import CONFIG_DIR, read_config_file

SEARCH_CONFIGS_DIR = CONFIG_DIR / "search"


class ConfigError(DenseNASError, ValueError):
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
    epochs: int = 150  # in all, warm-up included
    # Warm-up trains weights only (one op per layer drawn uniformly). It ends when
    # the supernet's sampled-path accuracy on the architecture split reaches
    # warmup_target_accuracy, or after warmup_epochs epochs, whichever comes
    # first (null target: exactly warmup_epochs, as in the paper).
    warmup_epochs: int = 50
    warmup_target_accuracy: float | None = None
    # How the candidate ops of a mixed layer hold their weights: "none" (each op
    # its own, as in the paper) or "nested" (the MBConv ops share one largest
    # kernel; smaller ones use its centre and first channels; own batch norms).
    weight_sharing: str = "none"
    weight_lr: float = 0.2
    weight_lr_min: float = 1e-5
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    # Whether the weights of ops not drawn in a weight step still take an SGD
    # step from their momentum and weight decay (zero gradient), as under the
    # PyTorch 1.0-1.2 the reference was run with (zero_grad zeroed gradients);
    # false: they are left alone, as under today's PyTorch (gradients set to None).
    undrawn_ops_step: bool = False
    # Adam on alpha (op choice) and beta (path choice), each its own optimizer.
    alpha_lr: float = 3e-4
    beta_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3
    # The reference's search trains with plain cross-entropy; smoothing is for retraining.
    label_smoothing: float = 0.0
    seed: int = 0
    checkpoint_every_steps: int = 200
    # Selection as in the reference: from epoch select_from_epoch (1-based; null:
    # the first architecture epoch) the keep_best derived architectures with the
    # best supernet accuracy on the architecture split are kept (arch_best1.json...).
    keep_best: int = 2
    select_from_epoch: int | None = None
    # A derivation choice whose margin (log-odds) is below this is a near-tie.
    tie_threshold: float = 0.05
    # Check a latency table measured on this kind of machine against whole nets
    # measured here before searching (refused over 10 % MAPE).
    latency_check: bool = True
    # TensorFlow's op determinism: the same command and seed derive the same net.
    deterministic: bool = True
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
        target = self.warmup_target_accuracy
        if target is not None and not 0.0 < target <= 1.0:
            raise ConfigError(f"warmup_target_accuracy must be in (0, 1] or null, got {target}")
        from densenas_tf.supernet import WEIGHT_SHARING

        if self.weight_sharing not in WEIGHT_SHARING:
            raise ConfigError(
                f"weight_sharing must be one of {list(WEIGHT_SHARING)}, got {self.weight_sharing!r}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.checkpoint_every_steps < 1:
            raise ConfigError("checkpoint_every_steps must be at least 1")
        for name in ("weight_lr", "alpha_lr", "beta_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.keep_best < 1:
            raise ConfigError(f"keep_best must be at least 1, got {self.keep_best}")
        if self.select_from_epoch is not None and not 1 <= self.select_from_epoch <= self.epochs:
            raise ConfigError(
                f"select_from_epoch must be in [1, epochs={self.epochs}] or null, "
                f"got {self.select_from_epoch}"
            )
        if self.tie_threshold < 0:
            raise ConfigError(f"tie_threshold must be >= 0, got {self.tie_threshold}")
        for name in ("mixed_precision", "latency_check", "deterministic", "undrawn_ops_step"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
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
        if "arch_lr" in data:
            raise ConfigError(
                f"{source}: 'arch_lr' was split into 'alpha_lr' and 'beta_lr' (the reference's "
                "two architecture learning rates); set those instead"
            )
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
