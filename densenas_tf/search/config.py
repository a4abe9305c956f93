"""The search's configuration: every hyper-parameter, with SPEC section 4 defaults.

Read from YAML/JSON, overridable by ``key=value`` strings (dotted keys reach
into ``objective`` and ``data``), validated, and written into the run
directory so that a resumed run can prove it is the same run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from densenas_tf.core.errors import DenseNASError
from densenas_tf.search.objectives import Objective
from densenas_tf.space.ops import WEIGHT_SHARING
from densenas_tf.space.spaces import CONFIG_DIR, read_config_file

SEARCH_CONFIGS_DIR = CONFIG_DIR / "search"


class ConfigError(DenseNASError, ValueError):
    """A search config that breaks a rule; the message names the field."""


# The datasets the search reads (densenas_tf.search.run.load_search_data).
SEARCH_DATASETS = ("fashion_mnist",)


@dataclasses.dataclass(frozen=True)
class _Range:
    """The values a numeric field allows: bounds, each inclusive unless open."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if value < self.low or (self.low_open and value == self.low):
            return False
        if self.high is None:
            return True
        return value < self.high or (not self.high_open and value == self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low}, {self.high}{right}"


# The range of every numeric field, by dotted key (a field's type comes from its annotation).
_RANGES = {
    "data.train_limit": _Range(1),
    "data.image_size": _Range(1),
    "data.stats_limit": _Range(1),
    "data.arch_fraction": _Range(0, 1, low_open=True, high_open=True),
    "batch_size": _Range(1),
    "epochs": _Range(1),
    "warmup_epochs": _Range(0),
    "warmup_target_accuracy": _Range(0, 1, low_open=True),
    "weight_lr": _Range(0, low_open=True),
    "weight_lr_min": _Range(0),
    "weight_momentum": _Range(0, 1, high_open=True),
    "weight_decay": _Range(0),
    "alpha_lr": _Range(0, low_open=True),
    "beta_lr": _Range(0, low_open=True),
    "arch_beta1": _Range(0, 1, high_open=True),
    "arch_beta2": _Range(0, 1, high_open=True),
    "arch_weight_decay": _Range(0),
    "label_smoothing": _Range(0, 1, high_open=True),
    "seed": _Range(0, 2**32 - 1),  # NumPy's legacy seeding (keras.utils.set_random_seed)
    "checkpoint_every_steps": _Range(1),
    "summary_every_steps": _Range(1),
    "keep_best": _Range(1),
    "select_from_epoch": _Range(1),
    "tie_threshold": _Range(0),
}
# The allowed values of string fields, by dotted key.
_CHOICES = {"data.dataset": SEARCH_DATASETS}
# What null means for the fields that may be null, by dotted key.
_NULL_MEANS = {
    "data.data_dir": "Debian's /usr/share/datasets/fashion-mnist",
    "data.train_limit": "all images",
    "data.tfds_name": "no tfds dataset",
    "data.tfds_data_dir": "tfds's default directory",
    "data.image_folder": "no image folder",
    "data.tfrecord_dir": "no TFRecord directory",
    "data.class_list": "every class",
    "data.image_size": "the source's own size",
    "data.stats_limit": "every training image",
    "data.cache_dir": "~/.cache/densenas_tf (TFRecords: their directory)",
    "latency_table": "the shipped table",
    "warmup_target_accuracy": "exactly warmup_epochs of warm-up",
    "select_from_epoch": "the first architecture epoch",
}
_KIND_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: "a string",
    Mapping: "a mapping",
}


def _fits(value: Any, kind: type) -> bool:
    """Whether ``value`` is of ``kind`` (bools are not numbers; floats are finite)."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is int:
        return isinstance(value, int)
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def _check_value(key: str, value: Any, annotation: Any) -> None:
    """Refuses a value that breaks the annotated type or the rules of field ``key``."""
    options = annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)
    nullable = type(None) in options
    (kind,) = (typing.get_origin(o) or o for o in options if o is not type(None))
    if value is None and nullable:
        return
    valid_range, choices = _RANGES.get(key), _CHOICES.get(key)
    ok = _fits(value, kind)
    if ok and valid_range is not None:
        ok = value in valid_range
    if ok and choices is not None:
        ok = value in choices
    if ok:
        return
    allowed = f"one of {list(choices)}" if choices else _KIND_NAMES.get(kind, kind.__name__)
    if valid_range is not None:
        allowed += f" {valid_range}"
    if nullable:
        allowed += f", or null ({_NULL_MEANS[key]})" if key in _NULL_MEANS else ", or null"
    hint = ""
    if kind in (int, float) and isinstance(value, str):
        try:
            float(value)
            hint = "; write it as a number, not as text (YAML reads 1e-5 as text: write 1.0e-5)"
        except ValueError:
            pass
    raise ConfigError(f"{key} must be {allowed}, got {value!r}{hint}")


def _check_fields(values: Mapping[str, Any], cls: type, prefix: str = "") -> None:
    """Checks the values of the fields of dataclass ``cls`` that ``values`` holds."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in values:
            _check_value(prefix + field.name, values[field.name], hints[field.name])


def _check_known(values: Any, cls: type, key: str) -> None:
    """``values`` is a mapping holding only fields of dataclass ``cls``."""
    known = sorted(f.name for f in dataclasses.fields(cls))
    if not isinstance(values, Mapping):
        raise ConfigError(f"{key} must be a mapping with the fields {known}, got {values!r}")
    unknown = sorted(str(name) for name in set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown field '{key}.{unknown[0]}'; the fields are {known}")


def _own_fields(instance: Any) -> dict[str, Any]:
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the search's images come from and how many it uses.

    Fashion-MNIST (``dataset``) is held in memory. A streaming source, one of
    ``tfds_name`` (prepared in ``tfds_data_dir``), ``image_folder`` or
    ``tfrecord_dir``, is read from disk as the search goes
    (``densenas_tf.data.streaming``), optionally limited to the classes of a
    ``class_list`` file and resized to ``image_size``; its weight/architecture
    split is drawn per class, and its images are normalised with per-channel
    statistics streamed once (over ``stats_limit`` images) and cached in
    ``cache_dir``. ``augment`` gives the weight split random-resized-crop (or
    pad-and-crop) and flips, as the reference does on ImageNet.
    """

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    # Use only the first N training images (after a seeded shuffle); null: all of them.
    train_limit: int | None = None
    arch_fraction: float = 0.2
    tfds_name: str | None = None
    tfds_data_dir: str | None = None
    image_folder: str | None = None
    tfrecord_dir: str | None = None
    class_list: str | None = None
    image_size: int | None = None
    augment: bool = False
    stats_limit: int | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        _check_fields(_own_fields(self), DataConfig, "data.")
        sources = [k for k in STREAMING_SOURCES if getattr(self, k)]
        if len(sources) > 1:
            raise ConfigError(
                f"data.{sources[0]} and data.{sources[1]} are both set; give one data source"
            )
        if not sources:
            for key in STREAMING_ONLY:
                if getattr(self, key) not in (None, False):
                    raise ConfigError(
                        f"data.{key} applies to streaming sources only; set one of "
                        f"{['data.' + k for k in STREAMING_SOURCES]} or drop data.{key}"
                    )

    @property
    def streamed(self) -> bool:
        """Whether the search reads a streaming source (else Fashion-MNIST in memory)."""
        return any(getattr(self, k) for k in STREAMING_SOURCES)

    def to_dict(self) -> dict[str, Any]:
        """The fields; the streaming ones only when set, so that configs without them
        keep the form older runs recorded."""
        values = _own_fields(self)
        for key in (*STREAMING_SOURCES, "tfds_data_dir", *STREAMING_ONLY):
            if values[key] == DEFAULTS_OF_STREAMING[key]:
                del values[key]
        return values

    @classmethod
    def from_dict(cls, data: Any) -> DataConfig:
        """The ``data`` mapping of a config file, its fields checked."""
        _check_known(data, cls, "data")
        return cls(**data)


# The keys naming a streaming source, and those that only apply to one.
STREAMING_SOURCES = ("tfds_name", "image_folder", "tfrecord_dir")
STREAMING_ONLY = ("class_list", "image_size", "augment", "stats_limit", "cache_dir")
DEFAULTS_OF_STREAMING = {
    **{k: None for k in (*STREAMING_SOURCES, "tfds_data_dir", *STREAMING_ONLY)},
    "augment": False,
}
_KIND_NAMES[DataConfig] = (
    f"a mapping with the fields {[f.name for f in dataclasses.fields(DataConfig)]}"
)


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
    # TensorBoard: each weight step's loss, accuracy and rate every N weight steps
    # (architecture steps: every one).
    summary_every_steps: int = 10
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
    # Each step (weight, architecture, evaluation) as one traced TensorFlow graph
    # that selects the drawn ops inside it (tf.switch_case): no per-op dispatch
    # from Python, at the cost of a longer trace over the first steps. false: each
    # op is its own graph, dispatched from Python (as mixed precision and several
    # replicas always do).
    graph_steps: bool = True
    # float16 compute (Keras mixed_float16) with float32 alpha, beta, softmaxes and
    # latency, and dynamic loss scaling; for GPUs (float16 is slow on CPUs).
    mixed_precision: bool = False

    def __post_init__(self):
        _check_fields(_own_fields(self), SearchConfig)
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}"
            )
        if self.select_from_epoch is not None and self.select_from_epoch > self.epochs:
            raise ConfigError(
                f"select_from_epoch must be in [1, epochs={self.epochs}] or null, "
                f"got {self.select_from_epoch}"
            )

        if self.weight_sharing not in WEIGHT_SHARING:
            raise ConfigError(
                f"weight_sharing must be one of {list(WEIGHT_SHARING)}, got {self.weight_sharing!r}"
            )

        _check_known(self.objective, Objective, "objective")
        _check_fields(self.objective, Objective, "objective.")
        try:
            Objective.from_config(self.objective)
        except ValueError as err:
            raise ConfigError(f"objective: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["objective"] = dict(self.objective)
        data["data"] = self.data.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "search config") -> SearchConfig:
        """A validated config; an error names ``source`` and the field."""
        if "arch_lr" in data:
            raise ConfigError(
                f"{source}: 'arch_lr' was split into 'alpha_lr' and 'beta_lr' (the reference's "
                "two architecture learning rates); set those instead"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown field {unknown[0]!r}; the fields are {sorted(known)}"
            )
        values = dict(data)
        try:
            if "data" in values and not isinstance(values["data"], DataConfig):
                values["data"] = DataConfig.from_dict(values["data"])
            return cls(**values)
        except ConfigError as err:
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
        path = Path(name_or_path)
        if not path.is_file():
            preset = SEARCH_CONFIGS_DIR / f"{name_or_path}.yaml"
            if not preset.is_file():
                presets = sorted(p.stem for p in SEARCH_CONFIGS_DIR.glob("*.yaml"))
                raise ConfigError(f"unknown search config {name_or_path!r}; presets are {presets}")
            path = preset
        data = read_config_file(path)
        source = str(path)
    if overrides:
        source += f" with the overrides {' '.join(overrides)}"
    return SearchConfig.from_dict(apply_overrides(data, overrides), source)
