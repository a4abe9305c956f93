"""Search objectives: cross-entropy plus a latency term, selectable by config.

- ``paper`` (DenseNAS eq. 8): ``CE + lambda * log(lat) / log(tau)``
  (defaults lambda 0.15, tau 15 ms, as the reference code).
- ``target``: zero below a target T, growing above it:
  ``CE + lambda * max(0, lat / T - 1)``.
- ``proxyless`` (ProxylessNAS-style, multiplicative): ``CE * (lat / T) ** beta``.
- ``budget``: a latency budget T that the derivation guarantees (the most
  probable architecture predicting at most T ms, ``space.budget``), with the
  search steered towards T in one of three ways (``steer``):
  - ``derived`` (the default): ``CE + w * log(lat / T)`` with the latency
    weight ``w`` (starting at lambda) moved after every architecture step by
    ``gain * (d / T - 1)``, where ``d`` is the predicted latency of the net
    the paper's derivation gives at that moment (Viterbi path, argmax ops),
    kept within [-lam_max, lam_max]: an integral controller on that net's
    latency. The weight grows while the net is slower than the budget and
    shrinks while it is faster, down through zero: a negative weight rewards
    latency, so a search whose net has fallen well below the budget is pushed
    back up towards it;
  - ``expected``: ``w`` multiplied after every step by
    ``exp(gain * (lat / T - 1))``, within [lam_min, lam_max], driven by the
    step's expected latency ``lat`` (the mixture's expected latency runs well
    above any one net's, so this steers the nets below T);
  - ``absolute`` (TuNAS's absolute-value reward): ``CE + lambda * |lat / T - 1|``.

All act on the expected latency in ms (a tensor differentiable in alpha and beta).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

OBJECTIVES = ("paper", "target", "proxyless", "budget")
STEERING = ("derived", "expected", "absolute")


@dataclasses.dataclass(frozen=True)
class Objective:
    kind: str = "paper"
    lam: float = 0.15
    tau_ms: float = 15.0
    target_ms: float | None = None
    beta: float = 0.6
    steer: str = "derived"  # budget only: how the search is steered to the budget
    gain: float = 0.05  # budget controller: the weight's log-step per unit of lat / T - 1
    lam_min: float = 1e-3  # budget controller: the weight's bounds
    lam_max: float = 10.0
    # budget only: the derived net should use the budget: when the most probable
    # net within it predicts under min_fraction x target_ms, the most probable in
    # [min_fraction, 1] x target_ms is derived instead (0: at most target_ms only).
    min_fraction: float = 0.95

    def __post_init__(self):
        if self.kind not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.kind!r}; objectives are {OBJECTIVES}")
        if self.steer not in STEERING:
            raise ValueError(f"unknown steer {self.steer!r}; the ways to steer are {STEERING}")
        if not 0 < self.lam_min <= self.lam_max or self.gain < 0:
            raise ValueError(
                "objective needs 0 < lam_min <= lam_max and gain >= 0, got "
                f"lam_min {self.lam_min}, lam_max {self.lam_max}, gain {self.gain}"
            )
        if self.kind == "paper" and (self.tau_ms <= 0 or self.tau_ms == 1.0):
            raise ValueError(f"objective 'paper' needs tau_ms > 0 and != 1, got {self.tau_ms}")
        if self.kind in ("target", "proxyless", "budget") and not (
            isinstance(self.target_ms, (int, float)) and 0 < self.target_ms < math.inf
        ):
            raise ValueError(
                f"objective {self.kind!r} needs a positive target_ms, got {self.target_ms}"
            )
        if isinstance(self.min_fraction, bool) or not (
            isinstance(self.min_fraction, (int, float)) and 0 <= self.min_fraction <= 1
        ):
            raise ValueError(f"objective min_fraction must be in [0, 1], got {self.min_fraction!r}")
        if self.lam < 0 or self.beta < 0:
            raise ValueError("objective weights lam and beta must be non-negative")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Objective:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"objective: unknown field {unknown[0]!r}; the fields are {sorted(known)}"
            )
        return cls(**config)

    @property
    def budget_ms(self) -> float | None:
        """The budget the derivation must meet (``budget`` objectives), else None."""
        return float(self.target_ms) if self.kind == "budget" else None

    @property
    def controlled(self) -> bool:
        """Whether the latency weight moves during the search."""
        return self.kind == "budget" and self.steer in ("derived", "expected")

    def next_weight(self, weight, latency_ms):
        """The controller's latency weight after a step whose steering latency
        (the derived net's, or the step's expected latency) was ``latency_ms``."""
        import tensorflow as tf

        error = tf.cast(latency_ms, tf.float32) / self.target_ms - 1.0
        if self.steer == "derived":
            return tf.clip_by_value(weight + self.gain * error, -self.lam_max, self.lam_max)
        return tf.clip_by_value(weight * tf.exp(self.gain * error), self.lam_min, self.lam_max)

    def latency_term(self, cross_entropy, latency_ms, num_replicas: int = 1, weight=None):
        """The loss minus the cross-entropy: each objective's one formula.

        Under a strategy with ``num_replicas`` replicas, given one replica's
        cross-entropy already scaled to the global batch, this replica's share:
        summed over the replicas it is the term of the summed cross-entropy.
        ``weight`` is the controller's latency weight (a tensor; default lambda)."""
        # TensorFlow only here: a search config (and the binaries' --help) loads
        # in 0.2 s without it; importing TensorFlow takes 4.4 s on 2 cores.
        import tensorflow as tf

        latency_ms = tf.cast(latency_ms, tf.float32)
        if self.kind == "proxyless":
            # CE * (lat / T) ** beta - CE: linear in the cross-entropy, so each
            # replica's own cross-entropy gives its share.
            return cross_entropy * (tf.pow(latency_ms / self.target_ms, self.beta) - 1.0)
        lam = self.lam if weight is None else tf.cast(weight, tf.float32)
        if self.controlled:
            term = lam * tf.math.log(latency_ms / self.target_ms)
        elif self.kind == "budget":
            term = lam * tf.abs(latency_ms / self.target_ms - 1.0)
        elif self.kind == "paper":
            term = self.lam * tf.math.log(latency_ms) / math.log(self.tau_ms)
        else:
            term = self.lam * tf.nn.relu(latency_ms / self.target_ms - 1.0)
        return term / num_replicas

    def loss(self, cross_entropy, latency_ms):
        return cross_entropy + self.latency_term(cross_entropy, latency_ms)
