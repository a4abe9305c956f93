"""Search spaces as data: a validated, immutable spec and its dense graph.

A space is read from a YAML or JSON config. Block 0 is the stem's output; the
searchable blocks follow; the final 1x1-conv node comes last (index
``num_blocks``, one stage above the last block, at the last resolution).
Block i feeds block j (j > i) when ``j - i <= m`` (m of block i's stage), the
stages differ by at most one, and the feature-map ratio is 1 or 2 (stride 1 or
2). This module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from densenas_tf.core.errors import DenseNASError
from densenas_tf.space import ops

REPO_ROOT = Path(__file__).resolve().parents[2]
# The presets and shipped tables: configs/ of an installed package (setup.py
# copies the checkout's configs/ there), else the checkout's own configs/;
# DENSENAS_CONFIG_DIR names another folder of the same layout. A path a user
# gives for a config, space, table or architecture is always read as given.
PACKAGE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "_configs"
CHECKOUT_CONFIG_DIR = REPO_ROOT / "configs"


def config_dir() -> Path:
    """The folder of the presets and shipped tables (see above)."""
    if os.environ.get("DENSENAS_CONFIG_DIR"):
        return Path(os.environ["DENSENAS_CONFIG_DIR"])
    return PACKAGE_CONFIG_DIR if PACKAGE_CONFIG_DIR.is_dir() else CHECKOUT_CONFIG_DIR


CONFIG_DIR = config_dir()
SPACES_DIR = CONFIG_DIR / "spaces"


class SearchSpaceError(DenseNASError, ValueError):
    """A search-space config that breaks a rule; the message names field and rule."""


@dataclasses.dataclass(frozen=True)
class Stem:
    """The fixed stem: conv 3x3 (conv_width, stride) then one op to width."""

    conv_width: int
    stride: int
    op: str
    width: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Block:
    index: int
    width: int
    feature_map_size: int
    stage: int
    stacking_layers: int


@dataclasses.dataclass(frozen=True)
class Edge:
    """A connection src -> dst; dst == num_blocks is the final 1x1-conv node."""

    index: int
    src: int
    dst: int
    stride: int


@dataclasses.dataclass(frozen=True)
class _GraphIndex:
    in_edges: dict[int, tuple[Edge, ...]]
    out_edges: dict[int, tuple[Edge, ...]]
    by_pair: dict[tuple[int, int], Edge]
    head_edges: tuple[Edge, ...]
    head_rows: dict[int, int]
    stacking_layers: tuple[StackingLayer, ...]
    stacking_rows: dict[int, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class StackingLayer:
    """One stacking mixed layer: row ``index`` of alpha_stack."""

    index: int
    block: int
    position: int


_TOP_LEVEL_FIELDS = (
    "name",
    "input_shape",
    "num_classes",
    "stem",
    "blocks",
    "connections_per_stage",
    "head_ops",
    "stacking_ops",
    "final_conv_width",
)
_BLOCK_FIELDS = ("widths", "feature_map_sizes", "stages", "stacking_layers")
_STEM_FIELDS = ("conv_width", "stride", "op")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The validated space and its dense graph. Build with ``from_config``."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    stem: Stem
    blocks: tuple[Block, ...]
    connections_per_stage: tuple[int, ...]
    head_ops: tuple[str, ...]
    stacking_ops: tuple[str, ...]
    final_conv_width: int
    edges: tuple[Edge, ...]

    # ----- construction -------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "config") -> SearchSpace:
        return _build(config, source)

    def to_config(self) -> dict[str, Any]:
        """The config this space was built from (canonical form)."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "stem": {
                "conv_width": self.stem.conv_width,
                "stride": self.stem.stride,
                "op": self.stem.op,
            },
            "blocks": {
                "widths": [b.width for b in self.blocks],
                "feature_map_sizes": [b.feature_map_size for b in self.blocks],
                "stages": [b.stage for b in self.blocks],
                "stacking_layers": [b.stacking_layers for b in self.blocks],
            },
            "connections_per_stage": list(self.connections_per_stage),
            "head_ops": list(self.head_ops),
            "stacking_ops": list(self.stacking_ops),
            "final_conv_width": self.final_conv_width,
        }

    def fingerprint(self) -> str:
        """A short hash of everything that shapes the graph (the name excluded)."""
        config = self.to_config()
        config.pop("name")
        text = json.dumps(config, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ----- graph queries --------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def final_node(self) -> int:
        return len(self.blocks)

    @property
    def num_stages(self) -> int:
        return self.blocks[-1].stage + 1

    @functools.cached_property
    def _index(self) -> _GraphIndex:
        """Lookups derived once from the edges (the graph queries run every step)."""
        ins: dict[int, list[Edge]] = {}
        outs: dict[int, list[Edge]] = {}
        for e in self.edges:
            ins.setdefault(e.dst, []).append(e)
            outs.setdefault(e.src, []).append(e)
        head_edges = tuple(e for e in self.edges if e.dst != self.final_node)
        layers = tuple(
            StackingLayer(index, block, position)
            for index, (block, position) in enumerate(
                (b.index, p) for b in self.blocks for p in range(b.stacking_layers)
            )
        )
        rows: dict[int, list[int]] = {}
        for layer in layers:
            rows.setdefault(layer.block, []).append(layer.index)
        return _GraphIndex(
            in_edges={k: tuple(v) for k, v in ins.items()},
            out_edges={k: tuple(v) for k, v in outs.items()},
            by_pair={(e.src, e.dst): e for e in self.edges},
            head_edges=head_edges,
            head_rows={e.index: row for row, e in enumerate(head_edges)},
            stacking_layers=layers,
            stacking_rows={k: tuple(v) for k, v in rows.items()},
        )

    def in_edges(self, node: int) -> tuple[Edge, ...]:
        return self._index.in_edges.get(node, ())

    def out_edges(self, node: int) -> tuple[Edge, ...]:
        return self._index.out_edges.get(node, ())

    def edge(self, src: int, dst: int) -> Edge:
        try:
            return self._index.by_pair[(src, dst)]
        except KeyError:
            raise KeyError(f"no edge {src} -> {dst} in space {self.name!r}") from None

    @property
    def head_edges(self) -> tuple[Edge, ...]:
        """Edges into searchable blocks; each carries one head mixed layer."""
        return self._index.head_edges

    @property
    def final_edges(self) -> tuple[Edge, ...]:
        return self.in_edges(self.final_node)

    def head_row(self, edge: Edge) -> int:
        """Row of alpha_head for this edge."""
        return self._index.head_rows[edge.index]

    @property
    def stacking_layers(self) -> tuple[StackingLayer, ...]:
        return self._index.stacking_layers

    def stacking_rows(self, block: int) -> tuple[int, ...]:
        return self._index.stacking_rows.get(block, ())

    def out_degrees(self) -> tuple[int, ...]:
        return tuple(len(self.out_edges(b.index)) for b in self.blocks)

    def enumerate_paths(self, limit: int = 1_000_000) -> list[tuple[int, ...]]:
        """Every path from block 0 to the final node (for tests and baselines)."""
        paths: list[tuple[int, ...]] = []
        stack: list[tuple[int, ...]] = [(0,)]
        while stack:
            path = stack.pop()
            if path[-1] == self.final_node:
                paths.append(path)
                if len(paths) > limit:
                    raise SearchSpaceError(f"space {self.name!r} has more than {limit} paths")
                continue
            for e in reversed(self.out_edges(path[-1])):
                stack.append((*path, e.dst))
        return paths


# ----- loading ----------------------------------------------------------------
def list_presets() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml")) + sorted(
        p.stem for p in SPACES_DIR.glob("*.json")
    )


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a YAML or JSON file into a dict, with a clear error when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # parse errors of either format
        raise SearchSpaceError(f"{path}: cannot parse: {err}") from err
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{path}: the top level must be a mapping of fields")
    return data


def load_space(preset_or_path: str | os.PathLike) -> SearchSpace:
    """Loads a preset by name (see ``list_presets``) or a YAML/JSON file."""
    candidate = Path(preset_or_path)
    if not candidate.is_file():
        for suffix in (".yaml", ".json"):
            preset = SPACES_DIR / f"{preset_or_path}{suffix}"
            if preset.is_file():
                candidate = preset
                break
        else:
            raise SearchSpaceError(
                f"unknown search space {str(preset_or_path)!r}: not a file and not a preset; "
                f"presets are {list_presets()}"
            )
    return SearchSpace.from_config(read_config_file(candidate), source=str(candidate))


# ----- validation -------------------------------------------------------------
def _fail(source: str, field: str, problem: str) -> SearchSpaceError:
    return SearchSpaceError(f"{source}: {field}: {problem}")


def _positive_int(source: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(source, field, f"must be a positive integer, got {value!r}")
    return value


def _int_list(source: str, field: str, value: Any) -> list[int]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _fail(source, field, f"must be a list of integers, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise _fail(source, field, f"must hold integers only, got {item!r}")
    return list(value)


def _mapping(source: str, field: str, value: Any, fields: tuple[str, ...]) -> Mapping[str, Any]:
    """A nested mapping that must hold exactly the given fields."""
    if not isinstance(value, Mapping):
        raise _fail(source, field, f"must be a mapping with the fields {list(fields)}")
    for name in fields:
        if name not in value:
            raise _fail(source, f"{field}.{name}", "is missing")
    extra = sorted(set(value) - set(fields))
    if extra:
        raise _fail(source, f"{field}.{extra[0]}", f"unknown field; the fields are {list(fields)}")
    return value


def _op_list(source: str, field: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _fail(source, field, f"must be a list of op names, got {value!r}")
    if not value:
        raise _fail(source, field, "is empty; give at least one op")
    for name in value:
        try:
            ops.parse_op(name)
        except ops.UnknownOpError as err:
            raise _fail(source, field, str(err)) from None
    if len(set(value)) != len(value):
        raise _fail(source, field, f"lists an op twice: {list(value)}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class _BlockLists:
    """The per-block lists of a config's ``blocks`` mapping, block 0 (the stem's output) first."""

    widths: list[int]
    sizes: list[int]
    stages: list[int]
    layers: list[int]

    @property
    def num_stages(self) -> int:
        return self.stages[-1] + 1

    @property
    def node_stages(self) -> list[int]:
        """The stage of every node: the final node sits one stage above the last block."""
        return [*self.stages, self.num_stages]

    @property
    def node_sizes(self) -> list[int]:
        """The feature-map size of every node: the final node keeps the last block's."""
        return [*self.sizes, self.sizes[-1]]


def _check_top_level(config: Any, source: str) -> None:
    """The config is a mapping holding exactly the top-level fields."""
    if not isinstance(config, Mapping):
        raise SearchSpaceError(f"{source}: the config must be a mapping of fields")
    unknown = sorted(set(config) - set(_TOP_LEVEL_FIELDS))
    if unknown:
        raise _fail(
            source,
            unknown[0],
            f"unknown field; the fields are {list(_TOP_LEVEL_FIELDS)}",
        )
    missing = [f for f in _TOP_LEVEL_FIELDS if f not in config]
    if missing:
        raise _fail(source, missing[0], "is missing")


def _read_name(config: Mapping[str, Any], source: str) -> str:
    """The space's name, a non-empty string."""
    name = config["name"]
    if not isinstance(name, str) or not name:
        raise _fail(source, "name", "must be a non-empty string")
    return name


def _read_input_shape(config: Mapping[str, Any], source: str) -> list[int]:
    """[height, width, channels] of the input images: positive, and square."""
    input_shape = _int_list(source, "input_shape", config["input_shape"])
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise _fail(
            source,
            "input_shape",
            f"must be [height, width, channels] > 0, got {input_shape}",
        )
    if input_shape[0] != input_shape[1]:
        raise _fail(
            source,
            "input_shape",
            f"must be square, got {input_shape[0]}x{input_shape[1]}",
        )
    return input_shape


def _read_stem(config: Mapping[str, Any], source: str) -> tuple[int, int, ops.OpSpec]:
    """(conv_width, stride, op) of the stem; its op cannot be 'skip'."""
    stem_cfg = _mapping(source, "stem", config["stem"], _STEM_FIELDS)
    conv_width = _positive_int(source, "stem.conv_width", stem_cfg["conv_width"])
    stride = stem_cfg["stride"]
    if stride not in (1, 2):
        raise _fail(source, "stem.stride", f"must be 1 or 2, got {stride!r}")
    try:
        op = ops.parse_op(stem_cfg["op"])
    except ops.UnknownOpError as err:
        raise _fail(source, "stem.op", str(err)) from None
    if op.is_skip:
        raise _fail(source, "stem.op", "cannot be 'skip'; the stem op changes width")
    return conv_width, stride, op


def _read_op_sets(
    config: Mapping[str, Any], source: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(head_ops, stacking_ops); a head layer cannot be 'skip'."""
    head_ops = _op_list(source, "head_ops", config["head_ops"])
    if ops.SKIP in head_ops:
        raise _fail(
            source,
            "head_ops",
            "cannot hold 'skip': a head layer changes width or resolution",
        )
    stacking_ops = _op_list(source, "stacking_ops", config["stacking_ops"])
    return head_ops, stacking_ops


def _read_blocks(
    config: Mapping[str, Any], source: str, input_size: int, stem_stride: int
) -> _BlockLists:
    """The block lists, each checked on its own and against the stem.

    One entry per block, at least two blocks; widths positive and unique;
    stacking-layer counts not negative, block 0's zero; sizes positive, block
    0's the stem's output size; stages starting at 0 and never decreasing.
    """
    blocks_cfg = _mapping(source, "blocks", config["blocks"], _BLOCK_FIELDS)
    lists = {f: _int_list(source, f"blocks.{f}", blocks_cfg[f]) for f in _BLOCK_FIELDS}
    lengths = {f: len(v) for f, v in lists.items()}
    if len(set(lengths.values())) != 1:
        raise _fail(
            source,
            "blocks",
            f"list lengths disagree: {lengths}; give one entry per block",
        )
    widths, sizes, stages, layers = (lists[f] for f in _BLOCK_FIELDS)
    if len(widths) < 2:
        raise _fail(source, "blocks", "needs the stem block and at least one searchable block")

    for i, width in enumerate(widths):
        if width < 1:
            raise _fail(
                source,
                "blocks.widths",
                f"block {i} has width {width}; widths must be positive",
            )
    seen: dict[int, int] = {}
    for i, width in enumerate(widths):
        if width in seen:
            raise _fail(
                source,
                "blocks.widths",
                f"width {width} is duplicated (blocks {seen[width]} and {i}); widths must be unique",
            )
        seen[width] = i
    for i, count in enumerate(layers):
        if count < 0:
            raise _fail(
                source,
                "blocks.stacking_layers",
                f"block {i} has {count} layers; counts cannot be negative",
            )
    if layers[0] != 0:
        raise _fail(
            source,
            "blocks.stacking_layers",
            "block 0 is the stem's output and must have 0 stacking layers",
        )
    for i, size in enumerate(sizes):
        if size < 1:
            raise _fail(
                source,
                "blocks.feature_map_sizes",
                f"block {i} has size {size}; sizes must be positive",
            )
    expected_size = -(-input_size // stem_stride)
    if sizes[0] != expected_size:
        raise _fail(
            source,
            "blocks.feature_map_sizes",
            f"block 0 (the stem output) must be {expected_size} for input size {input_size} "
            f"and stem stride {stem_stride}, got {sizes[0]}; input size and feature-map sizes are inconsistent",
        )
    if stages[0] != 0:
        raise _fail(source, "blocks.stages", f"block 0 must be in stage 0, got {stages[0]}")
    for i in range(1, len(stages)):
        if stages[i] < stages[i - 1]:
            raise _fail(
                source,
                "blocks.stages",
                f"stages must not decrease: block {i} has stage {stages[i]} after {stages[i - 1]}",
            )
    return _BlockLists(widths, sizes, stages, layers)


def _read_connections(config: Mapping[str, Any], source: str, num_stages: int) -> list[int]:
    """connections_per_stage: one m >= 1 per stage."""
    m_list = _int_list(source, "connections_per_stage", config["connections_per_stage"])
    if len(m_list) != num_stages:
        raise _fail(
            source,
            "connections_per_stage",
            f"has {len(m_list)} entries but the blocks span {num_stages} stages (0..{num_stages - 1}); give one m per stage",
        )
    for stage, m in enumerate(m_list):
        if m < 1:
            raise _fail(
                source,
                "connections_per_stage",
                f"stage {stage} has m = {m}; m must be at least 1",
            )
    return m_list


def _check_geometry(source: str, blocks: _BlockLists) -> None:
    """Nodes in connectable stages (at most one apart) have a feature-map ratio of 1
    or 2, and nodes of one stage share one size."""
    all_stages, all_sizes = blocks.node_stages, blocks.node_sizes
    num_nodes = len(all_stages)
    for i in range(num_nodes):
        for j in range(i + 1, num_nodes):
            if all_stages[j] - all_stages[i] > 1:
                continue
            ratio = all_sizes[i] / all_sizes[j]
            if ratio not in (1.0, 2.0):
                raise _fail(
                    source,
                    "blocks.feature_map_sizes",
                    f"blocks {i} ({all_sizes[i]}) and {j} ({all_sizes[j]}) are in connectable stages "
                    f"{all_stages[i]} and {all_stages[j]} but their feature-map ratio is {ratio:g}; "
                    "it must be 1 or 2",
                )
            if all_stages[i] == all_stages[j] and ratio != 1.0:
                raise _fail(
                    source,
                    "blocks.feature_map_sizes",
                    f"blocks {i} and {j} share stage {all_stages[i]} but their sizes differ "
                    f"({all_sizes[i]} vs {all_sizes[j]}); a stage has one resolution",
                )


def _make_edges(blocks: _BlockLists, m_list: Sequence[int]) -> list[Edge]:
    """The dense edges, sorted by (src, dst): node i feeds node j when j - i is at
    most m of i's stage and their stages are at most one apart."""
    all_stages, all_sizes = blocks.node_stages, blocks.node_sizes
    num_nodes = len(all_stages)
    edges: list[Edge] = []
    for i in range(num_nodes - 1):
        m = m_list[all_stages[i]]
        for j in range(i + 1, min(i + m, num_nodes - 1) + 1):
            if all_stages[j] - all_stages[i] <= 1:
                edges.append(Edge(len(edges), i, j, all_sizes[i] // all_sizes[j]))
    return edges


def _check_reachability(source: str, blocks: _BlockLists, edges: Sequence[Edge]) -> None:
    """Some path from block 0 reaches every block and the final node."""
    all_stages = blocks.node_stages
    num_nodes = len(all_stages)
    reached = {0}
    for e in edges:  # edges are sorted by src, so one pass suffices
        if e.src in reached:
            reached.add(e.dst)
    final = num_nodes - 1
    unreached = [i for i in range(num_nodes) if i not in reached]
    if unreached:
        # Consecutive blocks always connect unless the stage number jumps.
        first = unreached[0]
        names = ["final node" if i == final else f"block {i}" for i in unreached]
        raise _fail(
            source,
            "blocks.stages",
            f"no path reaches block {first} (stage {all_stages[first]} follows stage "
            f"{all_stages[first - 1]}); unreachable: {', '.join(names)}. A block feeds only "
            "blocks of its own or the next stage: number the stages without gaps",
        )


def _build(config: Mapping[str, Any], source: str) -> SearchSpace:
    """Validates a config step by step (the first broken rule is reported) and
    builds its space: fields, stem, ops, blocks, connections, geometry, edges and
    reachability."""
    _check_top_level(config, source)
    name = _read_name(config, source)
    input_shape = _read_input_shape(config, source)
    num_classes = _positive_int(source, "num_classes", config["num_classes"])
    final_conv_width = _positive_int(source, "final_conv_width", config["final_conv_width"])
    stem_conv_width, stem_stride, stem_op = _read_stem(config, source)
    head_ops, stacking_ops = _read_op_sets(config, source)
    blocks = _read_blocks(config, source, input_shape[0], stem_stride)
    m_list = _read_connections(config, source, blocks.num_stages)
    _check_geometry(source, blocks)
    edges = _make_edges(blocks, m_list)
    _check_reachability(source, blocks, edges)
    return SearchSpace(
        name=name,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        stem=Stem(stem_conv_width, stem_stride, stem_op.name, blocks.widths[0]),
        blocks=tuple(
            Block(i, blocks.widths[i], blocks.sizes[i], blocks.stages[i], blocks.layers[i])
            for i in range(len(blocks.widths))
        ),
        connections_per_stage=tuple(m_list),
        head_ops=head_ops,
        stacking_ops=stacking_ops,
        final_conv_width=final_conv_width,
        edges=tuple(edges),
    )
