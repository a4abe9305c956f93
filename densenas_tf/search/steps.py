"""The search's three kinds of step and their optimizers (paper 3.3).

- weight step: one op per layer drawn; SGD with momentum and weight decay on
  the drawn ops' weights (cosine learning rate per step); alpha and beta
  untouched.
- architecture step: two ops per layer drawn by softmax(alpha); cross-entropy
  plus the objective's latency term; Adam on alpha and on beta, each with its
  own learning rate; then eq. 9's rebalancing of the drawn alphas, inside the
  same step; the weights untouched.
- evaluation step: one op per layer drawn, no gradients.

Each step runs its replica function under ``strategy.run`` and sums the
figures over replicas. With ``graph_steps`` on one device each kind of step is
one traced graph (draws handed in as int32 tensors, one trace whatever made
them); otherwise it runs eagerly: mixed precision's skipped steps are Python
decisions, and across replicas the synchronised batch norms' all-reduces
cannot sit inside the switch that picks the drawn op.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from densenas_tf.latency.expected import ExpectedLatency
from densenas_tf.nn import switched_ops
from densenas_tf.nn.arch_params import rebalance_alpha
from densenas_tf.nn.optimizers import DynamicLossScale, MomentumSGD
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.objectives import Objective

KINDS = ("weight", "arch", "eval")


def int32_draw(sample):
    """A draw in fixed dtypes: one trace whatever produced it."""
    return type(sample)(*(tf.cast(part, tf.int32) for part in sample))


class SearchSteps:
    """The weight, architecture and evaluation steps of one supernet, with the
    optimizers they update. ``lean_arch=False`` makes the architecture step
    differentiate through the weights too (the plain tape), for comparison."""

    def __init__(
        self,
        config: SearchConfig,
        net: SuperNet,
        expected_latency: ExpectedLatency,
        strategy: tf.distribute.Strategy,
        total_weight_steps: int,
        lean_arch: bool = True,
    ):
        self.config, self.net, self.strategy = config, net, strategy
        self.expected_latency = expected_latency
        self.lean_arch = lean_arch
        with strategy.scope():
            schedule = keras.optimizers.schedules.CosineDecay(
                config.weight_lr, total_weight_steps, alpha=config.weight_lr_min / config.weight_lr
            )
            self.weight_optimizer = MomentumSGD(
                net.weight_variables,
                schedule,
                momentum=config.weight_momentum,
                weight_decay=config.weight_decay,
            )
            # One Adam per variable group: alpha (ops) and beta (paths) learn at
            # their own rates, as in the reference.
            self.alpha_optimizer, self.beta_optimizer = (
                keras.optimizers.Adam(
                    lr,
                    beta_1=config.arch_beta1,
                    beta_2=config.arch_beta2,
                    weight_decay=config.arch_weight_decay,
                )
                for lr in (config.alpha_lr, config.beta_lr)
            )
            self.alpha_optimizer.build(self.alpha_variables)
            self.beta_optimizer.build([net.beta])
            objective = Objective.from_config(config.objective)
            # The budget controller's latency weight: moved after every architecture
            # step (``Objective.next_weight``), checkpointed with the search.
            self.latency_weight = tf.Variable(
                float(objective.lam), trainable=False, dtype=tf.float32, name="latency_weight"
            )
        # float16 compute needs loss scaling; alpha, beta, softmaxes, latency stay float32.
        self.loss_scale = DynamicLossScale() if config.mixed_precision else None
        self.traced = bool(config.graph_steps) and self.loss_scale is None
        self.traced = self.traced and strategy.num_replicas_in_sync == 1
        # They never change: not worth walking the layer tree for them every step.
        self._weight_variables = net.weight_variables
        self._draw_keys = net.weight_draw_keys()
        self.objective = objective

    @property
    def alpha_variables(self) -> list:
        return [self.net.alpha_head, self.net.alpha_stack]

    @property
    def objective(self) -> Objective:
        return self._objective

    @objective.setter
    def objective(self, value: Objective) -> None:
        # A traced step holds the objective it was traced with: trace anew.
        self._objective = value
        self.traced_steps: list = []  # the tf.functions of the traced steps, in KINDS order
        self.weight_step = self._wrap(self.weight_replica)
        self.arch_step = self._wrap(self.arch_replica, rebalance=True)
        self.eval_step = self._wrap(self.eval_replica)

    def learning_rates(self, arch: bool, weight_steps_done: int) -> dict[str, float]:
        """The learning rates a step used: Adam's two (``alpha``, ``beta``), or
        the weight schedule's (``weight``) at that step's iteration (weight
        steps done - 1)."""
        if arch:
            optimizers = {"alpha": self.alpha_optimizer, "beta": self.beta_optimizer}
            return {k: float(tf.convert_to_tensor(o.learning_rate)) for k, o in optimizers.items()}
        schedule = self.weight_optimizer.learning_rate
        rate = schedule(weight_steps_done - 1) if callable(schedule) else schedule
        return {"weight": float(rate)}

    # ----- running a step on every replica ----------------------------------------------
    def _wrap(self, replica_fn, rebalance: bool = False):
        def step(batch, sample):
            before = self.alpha_before() if rebalance else None
            per_replica = self.strategy.run(replica_fn, args=(*batch, sample))
            values = {
                k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()
            }
            if rebalance:
                self.rebalance(before, sample, values)
                values["latency_weight"] = self.steer(values)
            return values

        if not self.traced:
            return step
        traced = tf.function(step, autograph=False)
        self.traced_steps.append(traced)
        return lambda batch, sample: traced(batch, int32_draw(sample))

    def step_graph(self, kind: str, batch, sample) -> tf.Graph:
        """The traced graph of one kind of step ("weight", "arch" or "eval") for
        inputs like ``batch`` and ``sample`` (traced now if it was not yet)."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind of step {kind!r}; kinds are {list(KINDS)}")
        if not self.traced:
            raise ValueError("the steps run eagerly (graph_steps is off): there is no graph")
        traced = self.traced_steps[KINDS.index(kind)]
        return traced.get_concrete_function(batch, int32_draw(sample)).graph

    def alpha_before(self) -> list[tf.Tensor]:
        """The alphas before an architecture step, for :meth:`rebalance`."""
        return [tf.identity(v) for v in self.alpha_variables]

    def rebalance(self, before, sample, values) -> None:
        """Eq. 9 after an architecture step's update: the drawn alphas shift so
        the undrawn ops keep their softmax share; nothing moves when the step's
        loss was not finite (a skipped or diverged step)."""
        finite = tf.reduce_all([tf.math.is_finite(values[k]) for k in ("ce", "loss")])
        alpha_head, alpha_stack = self.alpha_variables
        rebalance_alpha(alpha_head, before[0], sample.head, finite)
        rebalance_alpha(alpha_stack, before[1], sample.stack, finite)

    def steer(self, values) -> tf.Tensor:
        """The latency weight the architecture step used; a budget controller
        driven by the expected latency (``steer: expected``) then moves it by
        the step's (not after a step whose loss was not finite). The ``derived``
        controller moves it outside the step (``Searcher``)."""
        used = tf.identity(self.latency_weight)
        if self.objective.controlled and self.objective.steer == "expected":
            finite = tf.reduce_all([tf.math.is_finite(values[k]) for k in ("ce", "loss")])
            moved = self.objective.next_weight(used, values["latency_ms"])
            self.latency_weight.assign(tf.where(finite, moved, used))
        return used

    # ----- the replica functions ---------------------------------------------------------
    def cross_entropy(self, labels, logits):
        num_classes = self.net.space.num_classes
        targets = tf.one_hot(labels, num_classes)
        smoothing = self.config.label_smoothing
        if smoothing:
            targets = targets * (1.0 - smoothing) + smoothing / num_classes
        per_example = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.config.batch_size)

    def accuracy_sum(self, labels, logits):
        hits = tf.cast(
            tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(labels, tf.int32)),
            tf.float32,
        )
        return tf.reduce_sum(hits) / self.config.batch_size

    def _applied(self, sample) -> list | None:
        """Per weight variable: None (updated every step) or whether the step's
        draw used it (a boolean tensor). Needed in a traced step, where the
        gradients of the ops a switch did not take are zeros instead of None;
        None when undrawn ops step anyway (``undrawn_ops_step``) or eagerly."""
        if tf.executing_eagerly() or self.config.undrawn_ops_step:
            return None
        by_key: dict = {}  # one flag per op (or shared kernel), not per variable
        for key in set(self._draw_keys) - {None}:
            kind, row, ops_used = key
            drawn = (sample.head if kind == "head" else sample.stack)[row]
            by_key[key] = tf.reduce_any(tf.equal(drawn, list(ops_used)))
        return [None if key is None else by_key[key] for key in self._draw_keys]

    def weight_replica(self, images, labels, sample):
        variables = self._weight_variables
        # A traced step records the switched layers' drawn weights and
        # differentiates by those (switched_ops.Recording): the candidates that
        # were not drawn get no gradient computed and no update.
        record = not tf.executing_eagerly() and not self.config.undrawn_ops_step
        with tf.GradientTape() as tape:
            with switched_ops.recording(tape) if record else contextlib.nullcontext() as recording:
                logits = self.net(images, mode="one", sample=sample, training=True)
            loss = self.cross_entropy(labels, logits)
            scaled = self._scaled(loss)
        applied = self._applied(sample)
        sources = recording.sources if recording is not None else []
        if sources:
            # The recorded layers' variables are updated through their sources.
            owned = recording.variable_ids()
            keep = [k for k, v in enumerate(variables) if id(v) not in owned]
            variables = [variables[k] for k in keep]
            applied = None if applied is None else [applied[k] for k in keep]
        grads, finite = self._gradients(tape, scaled, [*variables, *sources])
        grads, source_grads = grads[: len(variables)], grads[len(variables) :]
        if finite:
            if self.config.undrawn_ops_step:
                # PyTorch 1.0-1.2 (the reference's): undrawn ops' weights get a zero
                # gradient, so momentum and weight decay still move them.
                grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
            # Otherwise ops that were not drawn get no gradient and no update.
            switched = [
                (position, source_grads[part], per, can_skip)
                for position, part, per, can_skip in (recording.updates if sources else [])
            ]
            pairs = list(zip(grads, variables))
            if applied is None:
                self.weight_optimizer.apply_gradients(
                    [(g, v) for g, v in pairs if g is not None], switched=switched
                )
            else:
                kept = [(p, a) for p, a in zip(pairs, applied) if p[0] is not None]
                self.weight_optimizer.apply_gradients(
                    [p for p, _ in kept], applied=[a for _, a in kept], switched=switched
                )
        return {"ce": loss, "acc": self.accuracy_sum(labels, logits), **self._skipped(finite)}

    def eval_replica(self, images, labels, sample):
        # Batch norm in training mode (batch statistics), as the reference evaluates.
        # No gradients: a traced step copies out the drawn ops' weights only.
        logits = self.net(images, mode="one", sample=sample, training=True, weight_gradients=False)
        return {
            "ce": self.cross_entropy(labels, logits),
            "acc": self.accuracy_sum(labels, logits),
        }

    def arch_replica(self, images, labels, sample):
        variables = self.net.arch_variables
        replicas = self.strategy.num_replicas_in_sync
        lean = self.lean_arch
        with tf.GradientTape(watch_accessed_variables=not lean) as tape:
            tape.watch([v.value for v in variables])
            # Only alpha and beta are differentiated: no kernel gradients computed.
            logits = self.net(
                images, mode="two", sample=sample, training=True, weight_gradients=not lean
            )
            ce = self.cross_entropy(labels, logits)
            latency = self.expected_latency(*self.net.latency_weights("two", sample))
            # This replica's share of the latency term: the objective's one formula.
            weight = self.latency_weight if self.objective.controlled else None
            loss = ce + self.objective.latency_term(ce, latency, replicas, weight)
            scaled = self._scaled(loss)
        grads, finite = self._gradients(tape, scaled, variables)
        if finite:
            grads = [tf.convert_to_tensor(g) for g in grads]
            self.alpha_optimizer.apply_gradients(zip(grads[:2], variables[:2]))
            self.beta_optimizer.apply_gradients(zip(grads[2:], variables[2:]))
        return {
            "ce": ce,
            "loss": loss,
            "acc": self.accuracy_sum(labels, logits),
            "latency_ms": latency / replicas,
            **self._skipped(finite),
        }

    # ----- mixed precision ---------------------------------------------------------------
    def _scaled(self, loss):
        """The loss to differentiate: multiplied by the loss scale under mixed precision."""
        return loss if self.loss_scale is None else self.loss_scale.scale_loss(loss)

    def _gradients(self, tape, scaled_loss, variables):
        """Gradients (unscaled) and whether the step may be applied: always in
        float32; under mixed precision only when they are finite everywhere."""
        grads = tape.gradient(scaled_loss, variables)
        if self.loss_scale is None:
            return grads, True
        grads = self.loss_scale.unscale(grads)
        return grads, self.loss_scale.all_finite(grads)

    def _skipped(self, finite: bool) -> dict[str, tf.Tensor]:
        if self.loss_scale is None:
            return {}
        # Summed over replicas by _wrap: 1.0 when the step was skipped.
        return {"skipped": tf.constant(0.0 if finite else 1.0 / self.strategy.num_replicas_in_sync)}
