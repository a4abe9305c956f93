"""The op registry: op names, their parsing, and their analytic costs.

Layers are built by `op_layers`; this module is pure Python (names, counts).
Op names are ``mbconv_k{K}_e{E}`` (inverted bottleneck, kernel K, expansion E on
the input width) and ``skip`` (identity).
"""

from __future__ import annotations

import dataclasses
import re

from densenas_tf.core.errors import DenseNASError

# How a mixed layer's candidate MBConvs hold their weights: each its own, or
# nested slices of one shared kernel per role (the largest kernel and expansion).
WEIGHT_SHARING = ("none", "nested")

SKIP = "skip"
KERNEL_SIZES = (3, 5, 7)
EXPANSIONS = (1, 3, 4, 6)
BN_EPSILON = 1e-3

# The paper's candidate sets (Table 1): head layers never skip.
HEAD_OPS = tuple(f"mbconv_k{k}_e{e}" for k in KERNEL_SIZES for e in (3, 6))
STACKING_OPS = (*HEAD_OPS, SKIP)

_MBCONV_RE = re.compile(r"^mbconv_k(\d+)_e(\d+)$")
_SHORT_RE = re.compile(r"^k(\d+)e(\d+)$")


class UnknownOpError(DenseNASError, ValueError):
    """An op name that the registry does not know."""


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """A parsed op name."""

    name: str
    kernel_size: int = 0  # 0 for skip
    expansion: int = 0  # 0 for skip

    @property
    def is_skip(self) -> bool:
        return self.name == SKIP

    @property
    def short_name(self) -> str:
        """Compact form used in block strings: ``k3e6`` or ``skip``."""
        return SKIP if self.is_skip else f"k{self.kernel_size}e{self.expansion}"


def _known_ops_hint() -> str:
    return (
        f"known ops are '{SKIP}' and 'mbconv_k{{K}}_e{{E}}' with K in "
        f"{list(KERNEL_SIZES)} and E in {list(EXPANSIONS)}"
    )


def parse_op(name: str) -> OpSpec:
    """Parses an op name, raising UnknownOpError with the known forms."""
    if not isinstance(name, str):
        raise UnknownOpError(f"op name must be a string, got {name!r}; {_known_ops_hint()}")
    if name == SKIP:
        return OpSpec(SKIP)
    match = _MBCONV_RE.match(name)
    if match:
        kernel, expansion = int(match.group(1)), int(match.group(2))
        if kernel in KERNEL_SIZES and expansion in EXPANSIONS:
            return OpSpec(name, kernel, expansion)
    raise UnknownOpError(f"unknown op {name!r}; {_known_ops_hint()}")


def op_from_short_name(short: str) -> OpSpec:
    """Parses ``k3e6`` (or ``skip``) back into an OpSpec."""
    if short == SKIP:
        return OpSpec(SKIP)
    match = _SHORT_RE.match(short)
    if not match:
        raise UnknownOpError(f"unknown short op {short!r}; expected 'k{{K}}e{{E}}' or '{SKIP}'")
    return parse_op(f"mbconv_k{match.group(1)}_e{match.group(2)}")


def has_residual(in_channels: int, out_channels: int, stride: int) -> bool:
    return stride == 1 and in_channels == out_channels


def check_op_shape(op: OpSpec, in_channels: int, out_channels: int, stride: int) -> None:
    """Skip is an identity: it cannot change width or resolution."""
    if op.is_skip and (stride != 1 or in_channels != out_channels):
        raise ValueError(
            f"op 'skip' cannot map {in_channels} channels stride {stride} to "
            f"{out_channels} channels; skip needs stride 1 and equal widths"
        )


def op_param_count(op_name: str, in_channels: int, out_channels: int) -> int:
    """Parameters of one op, BN moving statistics included (as Keras counts)."""
    op = parse_op(op_name)
    if op.is_skip:
        return 0
    hidden = in_channels * op.expansion
    count = 0
    if op.expansion != 1:
        count += in_channels * hidden + 4 * hidden
    count += op.kernel_size * op.kernel_size * hidden + 4 * hidden
    count += hidden * out_channels + 4 * out_channels
    return count


def op_bn_channels(op_name: str, in_channels: int, out_channels: int) -> int:
    """Channels normalised by the op's BN layers (each holds 2 statistics)."""
    op = parse_op(op_name)
    if op.is_skip:
        return 0
    hidden = in_channels * op.expansion
    return (hidden if op.expansion != 1 else 0) + hidden + out_channels


def op_mult_adds(
    op_name: str, in_channels: int, out_channels: int, in_size: int, stride: int
) -> int:
    """Multiply-adds of one op on a square in_size x in_size input ('same' padding)."""
    op = parse_op(op_name)
    if op.is_skip:
        return 0
    out_size = -(-in_size // stride)
    hidden = in_channels * op.expansion
    mult_adds = 0
    if op.expansion != 1:
        mult_adds += in_size * in_size * in_channels * hidden
    mult_adds += out_size * out_size * op.kernel_size * op.kernel_size * hidden
    mult_adds += out_size * out_size * hidden * out_channels
    return mult_adds


def conv_param_count(in_channels: int, filters: int, kernel_size: int) -> int:
    return kernel_size * kernel_size * in_channels * filters + 4 * filters


def conv_mult_adds(in_channels: int, filters: int, kernel_size: int, out_size: int) -> int:
    return out_size * out_size * kernel_size * kernel_size * in_channels * filters
