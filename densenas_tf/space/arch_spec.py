"""ArchSpec: a derived (or reference) architecture as a versioned document.

Search writes it, and training, export and benchmarks read it. It serialises
to JSON (with provenance) and to a one-line block string that parses back
exactly, for example::

    224x224x3 | stem:c16s2+k3e1>16 | 16>24:k3e6s2 | 24>48:k7e6s2[k3e3] | final:1984 | classes:1000

Parameters and multiply-adds are counted analytically from the spec. This
module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import write_text_atomic
from densenas_tf.space import ops
from densenas_tf.space.spaces import CONFIG_DIR, Stem

SCHEMA_VERSION = 1
ARCHS_DIR = CONFIG_DIR / "archs"


class ArchSpecError(DenseNASError, ValueError):
    """An ArchSpec document or block string that cannot be read."""


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of a derived net: head op (with the stride), then stacking ops."""

    in_width: int
    width: int
    head_op: str
    stride: int
    stacking_ops: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_width": self.in_width,
            "width": self.width,
            "head_op": self.head_op,
            "stride": self.stride,
            "stacking_ops": list(self.stacking_ops),
        }


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    stem: Stem
    blocks: tuple[BlockSpec, ...]
    final_conv_width: int
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _validate(self)

    # ----- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "stem": self.stem.to_dict(),
            "blocks": [b.to_dict() for b in self.blocks],
            "final_conv_width": self.final_conv_width,
            "block_string": self.to_block_string(),
            "provenance": dict(self.provenance),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "ArchSpec") -> ArchSpec:
        if not isinstance(data, Mapping):
            raise ArchSpecError(f"{source}: expected a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArchSpecError(
                f"{source}: schema_version {version!r} is not supported; this densenas_tf "
                f"reads schema_version {SCHEMA_VERSION}"
            )
        try:
            stem = Stem(**data["stem"])
            blocks = tuple(
                BlockSpec(
                    in_width=b["in_width"],
                    width=b["width"],
                    head_op=b["head_op"],
                    stride=b["stride"],
                    stacking_ops=tuple(b.get("stacking_ops", ())),
                )
                for b in data["blocks"]
            )
            spec = cls(
                name=data.get("name", ""),
                input_shape=tuple(data["input_shape"]),
                num_classes=data["num_classes"],
                stem=stem,
                blocks=blocks,
                final_conv_width=data["final_conv_width"],
                provenance=dict(data.get("provenance", {})),
            )
        except KeyError as err:
            raise ArchSpecError(f"{source}: missing field {err.args[0]!r}") from None
        except TypeError as err:
            raise ArchSpecError(f"{source}: malformed field: {err}") from None
        except (ArchSpecError, ops.UnknownOpError) as err:
            raise ArchSpecError(f"{source}: {err}") from None
        if "block_string" in data and data["block_string"] != spec.to_block_string():
            raise ArchSpecError(
                f"{source}: block_string disagrees with the blocks; "
                f"blocks say {spec.to_block_string()!r}"
            )
        return spec

    @classmethod
    def from_json(cls, text: str, source: str = "ArchSpec") -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArchSpecError(f"{source}: not valid JSON: {err}") from None
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the JSON document atomically (temp file + rename)."""
        write_text_atomic(path, self.to_json())

    # ----- block string ---------------------------------------------------------
    def to_block_string(self) -> str:
        h, w, c = self.input_shape
        stem_short = ops.parse_op(self.stem.op).short_name
        parts = [
            f"{h}x{w}x{c}",
            f"stem:c{self.stem.conv_width}s{self.stem.stride}+{stem_short}>{self.stem.width}",
        ]
        for b in self.blocks:
            head = ops.parse_op(b.head_op).short_name
            stack = ",".join(ops.parse_op(o).short_name for o in b.stacking_ops)
            parts.append(
                f"{b.in_width}>{b.width}:{head}s{b.stride}" + (f"[{stack}]" if stack else "")
            )
        parts.append(f"final:{self.final_conv_width}")
        parts.append(f"classes:{self.num_classes}")
        return " | ".join(parts)

    @classmethod
    def from_block_string(
        cls, text: str, name: str = "", provenance: Mapping[str, Any] | None = None
    ) -> ArchSpec:
        parts = [p.strip() for p in text.strip().split("|")]
        if len(parts) < 4:
            raise ArchSpecError(
                f"block string {text!r} has {len(parts)} parts; expected "
                "'HxWxC | stem:... | blocks... | final:N | classes:N'"
            )
        shape = _match(_SHAPE_RE, parts[0], "input shape 'HxWxC'")
        stem_m = _match(_STEM_RE, parts[1], "stem 'stem:c{conv}s{stride}+k{K}e{E}>{width}'")
        final_m = _match(_FINAL_RE, parts[-2], "'final:N'")
        classes_m = _match(_CLASSES_RE, parts[-1], "'classes:N'")
        blocks = []
        for part in parts[2:-2]:
            m = _match(_BLOCK_RE, part, "block 'in>out:k{K}e{E}s{stride}[k{K}e{E},...]'")
            stack = (
                tuple(ops.op_from_short_name(s).name for s in m.group(5).split(",") if s)
                if m.group(5)
                else ()
            )
            blocks.append(
                BlockSpec(
                    in_width=int(m.group(1)),
                    width=int(m.group(2)),
                    head_op=ops.op_from_short_name(m.group(3)).name,
                    stride=int(m.group(4)),
                    stacking_ops=stack,
                )
            )
        return cls(
            name=name,
            input_shape=tuple(int(g) for g in shape.groups()),
            num_classes=int(classes_m.group(1)),
            stem=Stem(
                conv_width=int(stem_m.group(1)),
                stride=int(stem_m.group(2)),
                op=ops.op_from_short_name(stem_m.group(3)).name,
                width=int(stem_m.group(4)),
            ),
            blocks=tuple(blocks),
            final_conv_width=int(final_m.group(1)),
            provenance=dict(provenance or {}),
        )

    def same_architecture(self, other: ArchSpec) -> bool:
        """True when both describe the same network (name and provenance aside)."""
        return self.to_block_string() == other.to_block_string()

    # ----- shapes -----------------------------------------------------------------
    @property
    def stem_output_size(self) -> int:
        return -(-self.input_shape[0] // self.stem.stride)

    @property
    def last_width(self) -> int:
        return self.blocks[-1].width if self.blocks else self.stem.width


_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
_STEM_RE = re.compile(r"^stem:c(\d+)s(\d+)\+(k\d+e\d+)>(\d+)$")
_BLOCK_RE = re.compile(r"^(\d+)>(\d+):(k\d+e\d+)s(\d+)(?:\[([a-z0-9,]*)\])?$")
_FINAL_RE = re.compile(r"^final:(\d+)$")
_CLASSES_RE = re.compile(r"^classes:(\d+)$")


def _match(pattern: re.Pattern, text: str, what: str) -> re.Match:
    m = pattern.match(text)
    if not m:
        raise ArchSpecError(f"cannot read {text!r} in a block string; expected {what}")
    return m


def _positive(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArchSpecError(f"{what} must be a positive integer, got {value!r}")


def _validate(spec: ArchSpec) -> None:
    if len(spec.input_shape) != 3:
        raise ArchSpecError(
            f"input_shape must be [height, width, channels], got {list(spec.input_shape)}"
        )
    for v in spec.input_shape:
        _positive(v, "input_shape entries")
    _positive(spec.num_classes, "num_classes")
    _positive(spec.final_conv_width, "final_conv_width")
    _positive(spec.stem.conv_width, "stem.conv_width")
    _positive(spec.stem.width, "stem.width")
    if spec.stem.stride not in (1, 2):
        raise ArchSpecError(f"stem.stride must be 1 or 2, got {spec.stem.stride!r}")
    ops.check_op_shape(ops.parse_op(spec.stem.op), spec.stem.conv_width, spec.stem.width, 1)
    width = spec.stem.width
    for i, b in enumerate(spec.blocks):
        where = f"blocks[{i}]"
        _positive(b.width, f"{where}.width")
        if b.in_width != width:
            raise ArchSpecError(
                f"{where}.in_width is {b.in_width} but the previous block outputs {width}; "
                "each block reads the previous block's width"
            )
        if b.stride not in (1, 2):
            raise ArchSpecError(f"{where}.stride must be 1 or 2, got {b.stride!r}")
        try:
            head = ops.parse_op(b.head_op)
            ops.check_op_shape(head, b.in_width, b.width, b.stride)
            for op in b.stacking_ops:
                ops.parse_op(op)
        except ValueError as err:
            raise ArchSpecError(f"{where}: {err}") from None
        width = b.width


def with_num_classes(spec: ArchSpec, num_classes: int) -> ArchSpec:
    """``spec`` with its classifier head replaced by one of ``num_classes`` outputs.

    Everything before the head (stem, blocks, final conv) stays; the class count
    is recorded in the returned ArchSpec (its JSON and block string say
    ``classes:N``) and the replacement in its provenance under
    ``head_replaced``. The same spec comes back when it already has N classes.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ArchSpecError(
            f"num_classes must be an integer of at least 2 (a classifier needs at least two "
            f"classes), got {num_classes!r}"
        )
    if num_classes == spec.num_classes:
        return spec
    provenance = dict(spec.provenance)
    earlier = provenance.get("head_replaced")
    first = earlier.get("from", spec.num_classes) if isinstance(earlier, dict) else spec.num_classes
    provenance["head_replaced"] = {"from": first, "to": num_classes}
    return dataclasses.replace(spec, num_classes=num_classes, provenance=provenance)


# ----- costs ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArchCost:
    """Analytic costs. ``params`` is trainable; ``total_params`` adds BN statistics."""

    params: int
    total_params: int
    mult_adds: int


def count_costs(spec: ArchSpec) -> ArchCost:
    """Counts parameters and multiply-adds of the net that build_model makes."""
    total, bn_channels, mult_adds = 0, 0, 0
    size = spec.stem_output_size
    total += ops.conv_param_count(spec.input_shape[2], spec.stem.conv_width, 3)
    bn_channels += spec.stem.conv_width
    mult_adds += ops.conv_mult_adds(spec.input_shape[2], spec.stem.conv_width, 3, size)

    def add_op(op_name: str, cin: int, cout: int, in_size: int, stride: int) -> None:
        nonlocal total, bn_channels, mult_adds
        total += ops.op_param_count(op_name, cin, cout)
        bn_channels += ops.op_bn_channels(op_name, cin, cout)
        mult_adds += ops.op_mult_adds(op_name, cin, cout, in_size, stride)

    add_op(spec.stem.op, spec.stem.conv_width, spec.stem.width, size, 1)
    for b in spec.blocks:
        add_op(b.head_op, b.in_width, b.width, size, b.stride)
        size = -(-size // b.stride)
        for op in b.stacking_ops:
            add_op(op, b.width, b.width, size, 1)
    total += ops.conv_param_count(spec.last_width, spec.final_conv_width, 1)
    bn_channels += spec.final_conv_width
    mult_adds += ops.conv_mult_adds(spec.last_width, spec.final_conv_width, 1, size)
    total += spec.final_conv_width * spec.num_classes + spec.num_classes
    mult_adds += spec.final_conv_width * spec.num_classes
    return ArchCost(params=total - 2 * bn_channels, total_params=total, mult_adds=mult_adds)


# ----- files ------------------------------------------------------------------
def list_reference_archs() -> list[str]:
    return sorted(p.stem for p in ARCHS_DIR.glob("*.json"))


def load_arch(name_or_path: str | os.PathLike) -> ArchSpec:
    """Loads a shipped reference net by name (see list_reference_archs) or a JSON file."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = ARCHS_DIR / f"{name_or_path}.json"
        if not shipped.is_file():
            raise ArchSpecError(
                f"unknown architecture {str(name_or_path)!r}: not a file and not a shipped net; "
                f"shipped nets are {list_reference_archs()}"
            )
        path = shipped
    return ArchSpec.from_json(path.read_text(), source=str(path))
