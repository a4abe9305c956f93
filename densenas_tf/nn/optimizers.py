"""SGD with momentum for the supernet's weights, as the reference (PyTorch) applies it.

``d = g + weight_decay * w; buf = momentum * buf + d; w -= lr * buf``, and a
weight whose op was not drawn (no gradient) is skipped with its buffer
untouched. Each update is one fused kernel per variable, which keeps an eager
step's optimizer cost small next to the forward and backward passes.
Gradients are summed across replicas before the update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from densenas_tf.nn import switched_ops


class MomentumSGD(tf.Module):
    def __init__(
        self,
        variables: Sequence,
        learning_rate: float | Callable[[tf.Tensor], tf.Tensor],
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        name: str = "momentum_sgd",
    ):
        super().__init__(name=name)
        self.learning_rate = learning_rate
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._slot = {}
        self.buffers = []
        for variable in variables:
            var = switched_ops.tf_variable(variable)
            buffer = tf.Variable(tf.zeros(var.shape, var.dtype), trainable=False, name="momentum")
            self._slot[id(var)] = len(self.buffers)
            self.buffers.append(buffer)

    def current_learning_rate(self) -> tf.Tensor:
        lr = self.learning_rate
        return tf.cast(lr(self.iterations) if callable(lr) else lr, tf.float32)

    def apply_gradients(self, grads_and_vars, applied=None, switched=()) -> None:
        """Call in replica context (inside strategy.run, or with no strategy).

        ``applied``: per pair, None (update) or a scalar boolean tensor; where
        it is false the variable and its buffer are left untouched, as for a
        missing gradient (a traced step, whose gradients of undrawn ops are
        zeros rather than None, says so with the draw).

        ``switched``: per switched layer, ``(position, grads, per_candidate,
        can_skip)``: gradients of the drawn candidate's weights (each in its
        variable's shape), applied to ``per_candidate[position]``'s
        variables; nothing when ``position`` is -1 (skip drawn, possible
        when ``can_skip``). One replica only (traced steps)."""
        applied = [None] * len(grads_and_vars) if applied is None else list(applied)
        kept = [
            (g, switched_ops.tf_variable(v), a)
            for (g, v), a in zip(grads_and_vars, applied)
            if g is not None
        ]
        switched = [
            (
                position,
                list(grads),
                [[switched_ops.tf_variable(v) for v in vs] for vs in per],
                can_skip,
            )
            for position, grads, per, can_skip in switched
        ]
        context = tf.distribute.get_replica_context()
        if switched and context.num_replicas_in_sync > 1:
            raise ValueError(
                "switched updates run on one replica only (traced steps); "
                "under several replicas pass the gradients of the variables"
            )
        flat = [tf.convert_to_tensor(g) for g, _, _ in kept]
        for _, grads, _, _ in switched:
            flat.extend(tf.convert_to_tensor(g) for g in grads)
        flat = context.all_reduce(tf.distribute.ReduceOp.SUM, flat) if flat else []
        grads, start = flat[: len(kept)], len(kept)
        groups = []
        for position, layer_grads, per, can_skip in switched:
            groups.append((position, flat[start : start + len(layer_grads)], per, can_skip))
            start += len(layer_grads)
        context.merge_call(
            self._update,
            args=(grads, [v for _, v, _ in kept], [a for _, _, a in kept], groups),
        )

    def _update(self, strategy, grads, variables, applied, switched=()) -> None:
        lr = self.current_learning_rate()
        momentum = tf.constant(self.momentum, tf.float32)

        def step(var, grad, buffer):
            if self.weight_decay:
                grad = grad + self.weight_decay * var
            return tf.raw_ops.ResourceApplyMomentum(
                var=var.handle, accum=buffer.handle, lr=tf.cast(lr, var.dtype), grad=grad,
                momentum=tf.cast(momentum, var.dtype),
            )  # fmt: skip

        # Per draw flag (shared by the variables of one op): one conditional
        # that updates them all when the op was drawn and leaves them and their
        # buffers untouched otherwise, as for a missing gradient; an op not
        # drawn costs no update (its zero gradient is still computed).
        gated: dict[int, tuple[tf.Tensor, list]] = {}
        for grad, var, flag in zip(grads, variables, applied):
            args = (grad, self.buffers[self._slot[id(var)]])
            if flag is None:
                strategy.extended.update(var, step, args=args, group=False)
            else:
                gated.setdefault(id(flag), (flag, []))[1].append((var, args))
        for flag, members in gated.values():

            def update(members=members):
                for var, args in members:
                    strategy.extended.update(var, step, args=args, group=False)
                return tf.constant(True)

            tf.cond(flag, update, lambda: tf.constant(False))
        for position, layer_grads, per_candidate, can_skip in switched:

            def update_drawn(layer_grads=layer_grads, per_candidate=per_candidate, drawn=position):
                # Each role's drawn variable and buffer through gathered handles:
                # a few ops per role whatever the number of candidates.
                for k, grad in enumerate(layer_grads):
                    owned = [variables[k] for variables in per_candidate]
                    buffers = [self.buffers[self._slot[id(v)]] for v in owned]
                    var = switched_ops.gathered_handle(owned, drawn)
                    dtype = owned[0].dtype
                    if self.weight_decay:
                        value = tf.raw_ops.ReadVariableOp(resource=var, dtype=dtype)
                        grad = grad + self.weight_decay * value
                    tf.raw_ops.ResourceApplyMomentum(
                        var=var, accum=switched_ops.gathered_handle(buffers, drawn),
                        lr=tf.cast(lr, dtype), grad=grad, momentum=tf.cast(momentum, dtype),
                    )  # fmt: skip
                return tf.constant(True)

            if can_skip:  # skip drawn (position -1): nothing to update
                tf.cond(position >= 0, update_drawn, lambda: tf.constant(False))
            else:
                update_drawn()
        self.iterations.assign_add(1)


class DynamicLossScale(tf.Module):
    """Dynamic loss scaling for float16 compute (``mixed_precision``).

    The loss is multiplied by ``scale`` before differentiation and the gradients
    divided by it after. A step whose gradients are not all finite on some
    replica is skipped everywhere and the scale halved; after
    ``growth_interval`` good steps in a row it doubles. Steps run eagerly, so
    the skip is a Python decision made identically on every replica (the
    non-finite count is all-reduced first).
    """

    def __init__(
        self, initial_scale: float = 2.0**15, growth_interval: int = 2000, name="loss_scale"
    ):
        super().__init__(name=name)
        self.growth_interval = int(growth_interval)
        self.scale = tf.Variable(
            float(initial_scale), dtype=tf.float32, trainable=False, name="scale"
        )
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        return loss * tf.cast(self.scale, loss.dtype)

    def unscale(self, grads: Sequence) -> list:
        inverse = 1.0 / self.scale
        return [None if g is None else tf.convert_to_tensor(g) * inverse for g in grads]

    def all_finite(self, grads: Sequence) -> bool:
        """True when every replica's gradients are finite (call in replica context)."""
        present = [tf.convert_to_tensor(g) for g in grads if g is not None]
        local = tf.add_n(
            [tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32)) for g in present]
        )
        context = tf.distribute.get_replica_context()
        if context is not None and tf.distribute.has_strategy():
            local = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        return bool(local == 0.0)

    def update(self, finite: bool) -> None:
        """After a step (on the host): halve on overflow, double after a good run."""
        if not finite:
            self.scale.assign(tf.maximum(self.scale / 2.0, 1.0))
            self.good_steps.assign(0)
            return
        self.good_steps.assign_add(1)
        if int(self.good_steps) >= self.growth_interval:
            self.scale.assign(self.scale * 2.0)
            self.good_steps.assign(0)
