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

Loading a table checks every value (see :meth:`LatencyTable.from_data`): a
NaN, negative or non-numeric timing is refused with the keys at fault and the
command that rebuilds the file, rather than surfacing later as a non-finite
loss or as a prediction of 0 ms.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import write_text_atomic
from densenas_tf.space import ops
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import (
    CONFIG_DIR,
    SPACES_DIR,
    SearchSpace,
    Stem,
    read_config_file,
)

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


ENTRY_FIELDS = ("median_ms", "mean_ms", "std_ms", "count")
_SHOWN = 3  # offending keys a message names; the rest are counted


@dataclasses.dataclass
class LatencyEntry:
    median_ms: float
    mean_ms: float
    std_ms: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def scaled(self, factor: float) -> LatencyEntry:
        """The entry with its times multiplied by ``factor`` (> 0)."""
        return LatencyEntry(
            self.median_ms * factor, self.mean_ms * factor, self.std_ms * factor, self.count
        )


def _kind(value: Any) -> str:
    """How a JSON value reads in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def _number_problem(name: str, value: Any, strictly_positive: bool) -> str | None:
    """Why value is not a finite number > 0 (or >= 0); None when it is."""
    rule = "a finite number > 0" if strictly_positive else "a finite number >= 0"
    problem = f"{name} = {value!r} (must be {rule})"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return problem
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return problem
    if not finite or value < 0 or (strictly_positive and value == 0):
        return problem
    return None


def _count_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return f"{name} = {value!r} (must be an integer >= 1)"
    return None


def _entry_problem(value: Any) -> str | None:
    """Why a table entry is unusable; None when it is a valid measurement."""
    if not isinstance(value, dict):
        return f"is {_kind(value)} (must be a mapping of {', '.join(ENTRY_FIELDS)})"
    missing = [f for f in ENTRY_FIELDS if f not in value]
    if missing:
        return f"lacks {', '.join(missing)}"
    unknown = sorted(set(value) - set(ENTRY_FIELDS))
    if unknown:
        return f"has the unknown field {unknown[0]!r} (the fields are {', '.join(ENTRY_FIELDS)})"
    return (
        _number_problem("median_ms", value["median_ms"], strictly_positive=True)
        or _number_problem("mean_ms", value["mean_ms"], strictly_positive=True)
        or _number_problem("std_ms", value["std_ms"], strictly_positive=False)
        or _count_problem("count", value["count"])
    )


def _provenance_problem(prov: Any) -> str | None:
    """Why the provenance cannot serve; None when the settings it records are usable."""
    if not isinstance(prov, dict):
        return f"provenance is {_kind(prov)} (must be a mapping)"
    if "backend" in prov and prov["backend"] not in BACKENDS:
        return f"provenance.backend = {prov['backend']!r} (must be one of {', '.join(BACKENDS)})"
    for field in ("threads", "batch_size"):
        if field in prov and (problem := _count_problem(f"provenance.{field}", prov[field])):
            return problem
    return None


def space_argument(
    name: str | None, fingerprint: str | None = None, source: str | os.PathLike | None = None
) -> str | None:
    """The ``--space`` value that makes tools/build_lut.py measure this space.

    The preset called ``name`` when it has this content (same fingerprint; any
    content when the fingerprint is unknown), else the file the space was loaded
    from, else None: no command can name the space.
    """
    if name:
        for suffix in (".yaml", ".json"):
            preset = SPACES_DIR / f"{name}{suffix}"
            if preset.is_file():
                if fingerprint is None:
                    return name
                try:
                    preset_fingerprint = SearchSpace.from_config(
                        read_config_file(preset)
                    ).fingerprint()
                except (DenseNASError, OSError):  # a broken preset names nothing
                    break
                if preset_fingerprint == fingerprint:
                    return name
                break
    if source is not None and Path(source).is_file():
        return str(source)
    return None


def _space_hint(
    name: str | None, fingerprint: str | None, source: str | os.PathLike | None
) -> tuple[str, str]:
    """(the --space value of a build_lut command, what a placeholder in it stands for)."""
    argument = space_argument(name, fingerprint, source)
    if argument is not None:
        return argument, ""
    if not name:
        return "SPACE", " (SPACE: the preset name or YAML/JSON file of the table's search space)"
    note = f"SPACE_FILE: the YAML/JSON file that defines space {name!r}"
    if any((SPACES_DIR / f"{name}{suffix}").is_file() for suffix in (".yaml", ".json")):
        note += f", not the preset {name!r}, whose content differs"
    return "SPACE_FILE", f" ({note})"


def _space_source(space: SearchSpace, source: str | os.PathLike | None) -> Any:
    """The file a space came from: the caller's, else the space's own record if it keeps one."""
    return source if source is not None else getattr(space, "source", None)


def build_lut_command(
    provenance: Mapping[str, Any], space: str, out: str | os.PathLike | None
) -> str:
    """The densenas-build-lut command that measures a table with the settings of provenance."""
    return " ".join(
        [
            "densenas-build-lut",
            f"--space={shlex.quote(space)}",
            f"--backend={shlex.quote(str(provenance.get('backend', 'tflite')))}",
            f"--threads={shlex.quote(str(provenance.get('threads', 1)))}",
            f"--batch_size={shlex.quote(str(provenance.get('batch_size', 1)))}",
            f"--out={shlex.quote(str(out)) if out is not None else 'THIS_TABLE'}",
        ]
    )


def _replace_command(
    provenance: Mapping[str, Any], space: str, out: str | os.PathLike | None, suffix: str
) -> str:
    """Moves the table at out aside (to out + suffix), then builds a new one there."""
    path = str(out) if out is not None else "THIS_TABLE"
    moved = shlex.quote(path + suffix)
    path = shlex.quote(path) if out is not None else path
    return f"mv {path} {moved} && {build_lut_command(provenance, space, out)}"


@dataclasses.dataclass
class LatencyTable:
    """A keyed, versioned latency table with its provenance.

    ``path`` is the file the table was last loaded from or saved to (None for a
    table made in code); messages name it and the commands they give write it.
    """

    provenance: dict[str, Any]
    entries: dict[str, LatencyEntry] = dataclasses.field(default_factory=dict)
    overhead_ms: float = 0.0
    path: Path | None = dataclasses.field(default=None, compare=False, repr=False)

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
        self.path = Path(path)

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
            raise LatencyTableError(
                f"{path}: not valid JSON ({err}); {_rebuild_hint(path, None)}"
            ) from None
        return cls.from_data(data, path)

    @classmethod
    def from_json(cls, text: str, path: str | os.PathLike | None = None) -> LatencyTable:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            where = path if path is not None else "latency table"
            raise LatencyTableError(
                f"{where}: not valid JSON ({err}); {_rebuild_hint(path, None)}"
            ) from None
        return cls.from_data(data, path)

    @classmethod
    def from_data(cls, data: Any, path: str | os.PathLike | None = None) -> LatencyTable:
        """A table from its parsed JSON, every value checked.

        Every entry must be a measurement: ``median_ms`` and ``mean_ms``
        finite and > 0 (skip ops have no entry at all, and every measured model,
        even the one-op overhead model, takes time, so 0 ms only comes from a
        broken file), ``std_ms`` finite and >= 0 (runs may time alike),
        ``count`` an integer >= 1. ``overhead_ms`` must be finite and >= 0:
        zero is allowed, it means no per-invocation cost is subtracted (a table
        planted by hand, whose entries are already net latencies). Anything
        else raises LatencyTableError naming the file, a few of the keys at
        fault with their count, and the command that rebuilds the file.
        """
        path = Path(path) if path is not None else None
        where = str(path) if path is not None else "latency table"
        if not isinstance(data, dict):
            raise LatencyTableError(
                f"{where}: the top level is {_kind(data)}, not a mapping of schema_version, "
                f"provenance, overhead_ms and entries; {_rebuild_hint(path, None)}"
            )
        prov = data.get("provenance")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LatencyTableError(
                f"{where}: schema_version {version!r} is not supported; this densenas_tf reads "
                f"{SCHEMA_VERSION}; {_rebuild_hint(path, prov)}"
            )
        missing = [f for f in ("provenance", "overhead_ms", "entries") if f not in data]
        if missing:
            raise LatencyTableError(
                f"{where}: the field {missing[0]} is missing; {_rebuild_hint(path, prov)}"
            )
        problem = _provenance_problem(prov) or _number_problem(
            "overhead_ms", data["overhead_ms"], strictly_positive=False
        )
        if problem:
            raise LatencyTableError(f"{where}: {problem}; {_rebuild_hint(path, prov)}")
        raw = data["entries"]
        if not isinstance(raw, dict):
            raise LatencyTableError(
                f"{where}: entries is {_kind(raw)}, not a mapping of latency key to timing; "
                f"{_rebuild_hint(path, prov)}"
            )
        bad = {key: problem for key, value in raw.items() if (problem := _entry_problem(value))}
        if bad:
            shown = "; ".join(f"{key!r} {problem}" for key, problem in list(bad.items())[:_SHOWN])
            more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
            raise LatencyTableError(
                f"{where}: {len(bad)} of {len(raw)} entr{'y' if len(raw) == 1 else 'ies'} "
                f"{'is' if len(bad) == 1 else 'are'} not a valid timing: {shown}{more}; "
                f"{_rebuild_hint(path, prov)}"
            )
        entries = {
            key: LatencyEntry(
                float(value["median_ms"]),
                float(value["mean_ms"]),
                float(value["std_ms"]),
                value["count"],
            )
            for key, value in raw.items()
        }
        return cls(dict(prov), entries, float(data["overhead_ms"]), path)

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

    def _missing_message(
        self,
        missing: list[str],
        space: SearchSpace | None = None,
        space_source: str | os.PathLike | None = None,
    ) -> str:
        prov = self.provenance
        if space is not None:
            argument, note = _space_hint(
                space.name, space.fingerprint(), _space_source(space, space_source)
            )
        else:
            argument, note = _space_hint(prov.get("space"), prov.get("space_fingerprint"), None)
        command = build_lut_command(prov, argument, self.path)
        listed = "\n  ".join(missing)
        table = f"the latency table {self.path}" if self.path is not None else "the latency table"
        return (
            f"{table} lacks {len(missing)} entr{'y' if len(missing) == 1 else 'ies'}:\n  {listed}\n"
            f"measure them (re-running on an existing table measures only what is missing)"
            f"{note} with:\n  {command}"
        )

    def _other_space_message(
        self, space: SearchSpace, space_source: str | os.PathLike | None = None
    ) -> str:
        prov = self.provenance
        built, fingerprint = prov.get("space"), prov.get("space_fingerprint")
        argument, note = _space_hint(
            space.name, space.fingerprint(), _space_source(space, space_source)
        )
        where = f"{self.path}: " if self.path is not None else ""
        if built == space.name:
            return (
                f"{where}the content of space {space.name!r} changed since this latency table "
                f"was built (fingerprint {fingerprint} then, {space.fingerprint()} now), so its "
                f"entries do not describe the space; move the stale table aside and rebuild it"
                f"{note} with: {_replace_command(prov, argument, self.path, '.stale')}"
            )
        out = default_table_path(
            space.name,
            prov.get("backend", "tflite"),
            prov.get("threads", 1),
            prov.get("batch_size", 1),
        )
        return (
            f"{where}this latency table was built for space {built!r} "
            f"(fingerprint {fingerprint}), not for {space.name!r} ({space.fingerprint()}); "
            f"build a table for this space{note} with: {build_lut_command(prov, argument, out)}"
        )

    def check_fingerprint(
        self, space: SearchSpace, space_source: str | os.PathLike | None = None
    ) -> None:
        """Refuses a table built for another space, or for an earlier content of this
        one (same name, other fingerprint); ``space_source`` as in check_space."""
        fingerprint = self.provenance.get("space_fingerprint")
        if fingerprint is not None and fingerprint != space.fingerprint():
            raise LatencyTableError(self._other_space_message(space, space_source))

    def check_space(
        self, space: SearchSpace, space_source: str | os.PathLike | None = None
    ) -> None:
        """Refuses a table built for another space or shape; names every missing key.

        ``space_source`` is the file the space was loaded from, if any: the
        commands in the messages measure that file's space (a preset name
        serves when the preset has the space's content).
        """
        self.check_fingerprint(space, space_source)
        missing = self.missing(space_keys(space).all_keys())
        if missing:
            raise LatencyTableError(self._missing_message(missing, space, space_source))

    def predicted_ms(self, spec: ArchSpec) -> float:
        """Predicted latency of a derived net: overhead once plus its entries."""
        keys = arch_keys(spec)
        missing = self.missing(k.key for k in keys)
        if missing:
            raise LatencyTableError(self._missing_message(missing))
        return self.overhead_ms + sum(self.net_ms(k) for k in keys)


def _rebuild_hint(path: Path | None, provenance: Any) -> str:
    """How to replace an unreadable table file: move it aside, then measure anew."""
    prov = provenance if isinstance(provenance, dict) else {}
    if _provenance_problem(prov):
        prov = {}
    argument, note = _space_hint(prov.get("space"), prov.get("space_fingerprint"), None)
    return (
        f"move it aside and rebuild it{note} with: {_replace_command(prov, argument, path, '.bad')}"
    )


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
    space_name: str,
    backend: str = "tflite",
    threads: int = 1,
    batch_size: int = 1,
    quantization: str = "none",
) -> Path:
    suffix = "" if quantization == "none" else f"_{quantization}"
    return LATENCY_DIR / f"{space_name}_{backend}_t{threads}_b{batch_size}{suffix}.json"


def quantization_of(table: LatencyTable) -> str:
    """How the table's pieces were converted: ``none`` (float32) or ``int8``."""
    return table.provenance.get("quantization", "none")
