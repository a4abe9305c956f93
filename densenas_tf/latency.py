"""Latency lookup tables and the expected latency of the supernet (paper 3.3.2).

A table maps a canonical key per measured piece to its timing statistics:

- ``mbconv_k3_e6/i28x28x16/s2/o24``: an op on its exact input shape, stride and
  output width (every edge or layer with that shape shares the entry);
- ``stem/c16s2+mbconv_k3_e1/i224x224x3/o16``: the fixed stem;
- ``final_conv/i7x7x320/o1984``: the final 1x1 conv, BN, ReLU6 on one input;
- ``classifier/i7x7x1984/o1000``: global pooling and the dense layer.

Each piece is timed as its own small model, so each entry includes one model
invocation's fixed cost; the table records that cost (``overhead_ms``, the
latency of a one-op model) and predictions count it once:
``predicted = overhead + sum(entry - overhead)``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from densenas_tf import ops
from densenas_tf.arch_spec import ArchSpec
from densenas_tf.errors import DenseNASError
from densenas_tf.io_utils import write_text_atomic
from densenas_tf.search_space import CONFIG_DIR, SearchSpace, Stem

SCHEMA_VERSION = 1
LATENCY_DIR = CONFIG_DIR / "latency"
BACKENDS = ("tflite", "tf")


class LatencyTableError(DenseNASError, ValueError):
    """A latency table that cannot serve the request; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class LatencyKey:
    """One measurable piece of a network, with everything that shapes its latency."""

    kind: str  # "op", "stem", "final_conv" or "classifier"
    in_shape: tuple[int, int, int]
    out_channels: int
    op: str = ""
    stride: int = 1
    stem: Stem | None = None

    @property
    def key(self) -> str:
        shape = "i{}x{}x{}".format(*self.in_shape)
        if self.kind == "op":
            return f"{self.op}/{shape}/s{self.stride}/o{self.out_channels}"
        if self.kind == "stem":
            stem = self.stem
            return f"stem/c{stem.conv_width}s{stem.stride}+{stem.op}/{shape}/o{self.out_channels}"
        if self.kind in ("final_conv", "classifier"):
            return f"{self.kind}/{shape}/o{self.out_channels}"
        raise ValueError(f"unknown latency key kind {self.kind!r}")


def op_key(
    op: str, size: int, in_channels: int, stride: int, out_channels: int
) -> LatencyKey | None:
    """The key of an op on a size x size input; None for skip (zero latency)."""
    if ops.parse_op(op).is_skip:
        return None
    return LatencyKey("op", (size, size, in_channels), out_channels, op=op, stride=stride)


def stem_key(input_shape: tuple[int, int, int], stem: Stem) -> LatencyKey:
    return LatencyKey("stem", tuple(input_shape), stem.width, stem=stem)


def final_conv_key(size: int, in_channels: int, width: int) -> LatencyKey:
    return LatencyKey("final_conv", (size, size, in_channels), width)


def classifier_key(size: int, width: int, num_classes: int) -> LatencyKey:
    return LatencyKey("classifier", (size, size, width), num_classes)


@dataclasses.dataclass(frozen=True)
class SpaceKeys:
    """Every key a search space needs, laid out like its architecture parameters."""

    stem: LatencyKey
    head: tuple[tuple[LatencyKey, ...], ...]  # [head row][head op]
    stack: tuple[tuple[LatencyKey | None, ...], ...]  # [stacking row][stacking op]
    final: tuple[LatencyKey, ...]  # per final edge
    classifier: LatencyKey

    def all_keys(self) -> dict[str, LatencyKey]:
        keys: dict[str, LatencyKey] = {}
        pieces: list[LatencyKey | None] = [self.stem, *self.final, self.classifier]
        for row in (*self.head, *self.stack):
            pieces.extend(row)
        for piece in pieces:
            if piece is not None:
                keys.setdefault(piece.key, piece)
        return dict(sorted(keys.items()))


def space_keys(space: SearchSpace) -> SpaceKeys:
    head = []
    for edge in space.head_edges:
        src, dst = space.blocks[edge.src], space.blocks[edge.dst]
        head.append(
            tuple(
                op_key(op, src.feature_map_size, src.width, edge.stride, dst.width)
                for op in space.head_ops
            )
        )
    stack = []
    for layer in space.stacking_layers:
        block = space.blocks[layer.block]
        stack.append(
            tuple(
                op_key(op, block.feature_map_size, block.width, 1, block.width)
                for op in space.stacking_ops
            )
        )
    final = tuple(
        final_conv_key(
            space.blocks[e.src].feature_map_size, space.blocks[e.src].width, space.final_conv_width
        )
        for e in space.final_edges
    )
    last_size = space.blocks[-1].feature_map_size
    return SpaceKeys(
        stem=stem_key(space.input_shape, space.stem),
        head=tuple(head),
        stack=tuple(stack),
        final=final,
        classifier=classifier_key(last_size, space.final_conv_width, space.num_classes),
    )


def arch_keys(spec: ArchSpec) -> list[LatencyKey]:
    """The keys along a derived net, in order (skips contribute nothing)."""
    keys = [stem_key(spec.input_shape, spec.stem)]
    size = spec.stem_output_size
    for block in spec.blocks:
        keys.append(op_key(block.head_op, size, block.in_width, block.stride, block.width))
        size = -(-size // block.stride)
        keys.extend(op_key(op, size, block.width, 1, block.width) for op in block.stacking_ops)
    keys.append(final_conv_key(size, spec.last_width, spec.final_conv_width))
    keys.append(classifier_key(size, spec.final_conv_width, spec.num_classes))
    return [k for k in keys if k is not None]


@dataclasses.dataclass
class LatencyEntry:
    median_ms: float
    mean_ms: float
    std_ms: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LatencyTable:
    """A keyed, versioned latency table with its provenance."""

    provenance: dict[str, Any]
    entries: dict[str, LatencyEntry] = dataclasses.field(default_factory=dict)
    overhead_ms: float = 0.0

    def to_json(self) -> str:
        data = {
            "schema_version": SCHEMA_VERSION,
            "provenance": self.provenance,
            "overhead_ms": self.overhead_ms,
            "entries": {k: self.entries[k].to_dict() for k in sorted(self.entries)},
        }
        return json.dumps(data, indent=1) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise LatencyTableError(
                f"{path}: no such latency table; build one with tools/build_lut.py"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise LatencyTableError(f"{path}: not valid JSON: {err}") from None
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LatencyTableError(
                f"{path}: schema_version {version!r} is not supported; this densenas_tf reads "
                f"{SCHEMA_VERSION}; rebuild the table with tools/build_lut.py"
            )
        try:
            entries = {k: LatencyEntry(**v) for k, v in data["entries"].items()}
            return cls(dict(data["provenance"]), entries, float(data["overhead_ms"]))
        except (KeyError, TypeError) as err:
            raise LatencyTableError(f"{path}: malformed latency table: {err}") from None

    # ----- lookups -------------------------------------------------------------------
    def net_ms(self, key: LatencyKey | None) -> float:
        """An entry's latency without the per-invocation overhead (0 for skip)."""
        if key is None:
            return 0.0
        try:
            entry = self.entries[key.key]
        except KeyError:
            raise LatencyTableError(self._missing_message([key.key])) from None
        return max(entry.median_ms - self.overhead_ms, 0.0)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return sorted(k for k in set(keys) if k not in self.entries)

    def _missing_message(self, missing: list[str], space_name: str | None = None) -> str:
        prov = self.provenance
        command = (
            f"python tools/build_lut.py --space={space_name or prov.get('space', 'SPACE')} "
            f"--backend={prov.get('backend', 'tflite')} --threads={prov.get('threads', 1)} "
            f"--batch_size={prov.get('batch_size', 1)} --out=THIS_TABLE"
        )
        listed = "\n  ".join(missing)
        return (
            f"the latency table lacks {len(missing)} entr{'y' if len(missing) == 1 else 'ies'}:\n  {listed}\n"
            f"measure them (re-running on an existing table measures only what is missing) with:\n  {command}"
        )

    def check_space(self, space: SearchSpace) -> None:
        """Refuses a table built for another space or shape; names every missing key."""
        fingerprint = self.provenance.get("space_fingerprint")
        if fingerprint is not None and fingerprint != space.fingerprint():
            raise LatencyTableError(
                f"this latency table was built for space {self.provenance.get('space')!r} "
                f"(fingerprint {fingerprint}), not for {space.name!r} ({space.fingerprint()}); "
                "build a table for this space with tools/build_lut.py"
            )
        missing = self.missing(space_keys(space).all_keys())
        if missing:
            raise LatencyTableError(self._missing_message(missing, space.name))

    def predicted_ms(self, spec: ArchSpec) -> float:
        """Predicted latency of a derived net: overhead once plus its entries."""
        keys = arch_keys(spec)
        missing = self.missing(k.key for k in keys)
        if missing:
            raise LatencyTableError(self._missing_message(missing))
        return self.overhead_ms + sum(self.net_ms(k) for k in keys)


def new_provenance(
    space: SearchSpace,
    backend: str,
    threads: int,
    batch_size: int,
    device: str,
    versions: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "space": space.name,
        "space_fingerprint": space.fingerprint(),
        "backend": backend,
        "device": device,
        "threads": threads,
        "batch_size": batch_size,
        **dict(versions),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def default_table_path(
    space_name: str, backend: str = "tflite", threads: int = 1, batch_size: int = 1
) -> Path:
    return LATENCY_DIR / f"{space_name}_{backend}_t{threads}_b{batch_size}.json"
