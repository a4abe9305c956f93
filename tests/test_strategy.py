"""tf.distribute strategies against one device: the per-replica loss scaling,
synchronised batch norm, and search steps under MirroredStrategy (two logical
CPUs) and MultiWorkerMirroredStrategy (two processes on localhost).

TensorFlow splits a CPU into logical devices only before it initialises, and
the split is process-wide, so the TensorFlow work of every test runs in a
subprocess: this file run as a script, ``python tests/test_strategy.py CASE
OUT_DIR``, writes its results to OUT_DIR/CASE.npz and the test compares them
with one device's results or with values computed here.

The search steps use plain SGD (no momentum, no weight decay) on the weights
and on alpha and beta, so that every update is the gradient times the
learning rate: a replica summing instead of averaging its share of the loss
doubles every update; unsynchronised batch norm changes them by about as
much on these batches, whose halves (one per replica) differ in brightness.

What one device and two replicas may differ by: float32 sums taken in another
order (batch statistics over one or two replicas) differ by about 1e-6 of a
batch variance, and in this net at its initial weights some gradients are
small sums of large terms of both signs (alpha's gradient in particular is
the product of the gradient at a mixed layer with the difference of two
untrained ops' outputs); a ReLU6 input that rounding moves across 0 then
changes the early layers' alpha and beta gradients by up to a few percent,
and the steps after it carry that on. Two replicas end PLAN within 2e-5 of
one device's changes here; on one device alone, scaling the initial weights
by (1 + 1e-6 noise) moves alpha and beta's change by up to 3e-3 and the
weights' by 3e-5. The tolerances sit well above those and far below the
errors a factor of two or per-replica batch statistics make (30 % to 100 %).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import free_ports
from helpers import made_up_table, micro_space, python_env

# Each test runs its strategies in fresh processes: the slow tier only.
pytestmark = pytest.mark.slow

SEED = 5
GLOBAL_BATCH = 16  # 8 images per replica
# A small space (12x12 images, 4 classes) keeps rounding noise low and steps fast.
SPACE = micro_space(
    "strategy_micro",
    widths=[4, 8, 12, 16],
    feature_map_sizes=[12, 6, 6, 3],
    stages=[0, 1, 1, 2],
    stacking_layers=[0, 1, 1, 0],
    num_classes=4,
    final_conv_width=16,
)
# The scripted search: w = one weight step, a = one architecture step, alternating.
PLAN = "wawawawa"
WEIGHT_LR = 0.003
ARCH_LR = 0.03
# A latency term that weighs about as much as the cross-entropy in alpha's and beta's gradients.
SEARCH_OBJECTIVE = {"kind": "paper", "lam": 1.5, "tau_ms": 15.0}
# The relative error allowed in each group's change (see the module docstring).
TOLERANCE = {"weights": 1e-3, "bn_statistics": 1e-4, "arch": 0.02}


# ----- the subprocess side ------------------------------------------------------------


def _split_cpu() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def _space():
    from densenas_tf.space.spaces import SearchSpace

    return SearchSpace.from_config(SPACE)


def _table(space):
    """A latency table of no device: a different cost for every entry, so that
    the latency gradient differs from op to op and from path to path."""
    return made_up_table(space, lambda k, key: 0.05 + 0.03 * ((k * 7) % 11), sort_keys=True)


def _images(count: int, seed: int = SEED):
    """uint8 images whose brightness depends on their label; each global batch
    is ordered brightest first, so its two halves (one per replica) differ."""
    rng = np.random.default_rng(seed)
    size = SPACE["input_shape"][0]
    labels = rng.integers(0, SPACE["num_classes"], count).astype(np.int32)
    noise = rng.normal(90.0, 50.0, size=(count, size, size, 1))
    images = np.clip(noise + 35.0 * labels[:, None, None, None], 0, 255).astype(np.uint8)
    order = []
    for start in range(0, count, GLOBAL_BATCH):
        batch = np.arange(start, min(start + GLOBAL_BATCH, count))
        order.extend(batch[np.argsort(-images[batch].mean(axis=(1, 2, 3)), kind="stable")])
    return images[order], labels[order]


def _supernet(strategy):
    import keras

    from densenas_tf.nn.supernet import SuperNet

    keras.utils.set_random_seed(SEED)  # the same initial weights on every side
    with strategy.scope():
        return SuperNet.from_space(_space(), arch_init_seed=SEED)


def _searcher(strategy, run_dir, data, objective=None):
    """A Searcher with plain SGD on the weights (momentum 0, no weight decay)
    and on alpha and beta (standing in for the configured Adam)."""
    import keras

    from densenas_tf.search.config import SearchConfig
    from densenas_tf.search.searcher import Searcher

    config = SearchConfig.from_dict(
        {
            "objective": objective or SEARCH_OBJECTIVE,
            "batch_size": GLOBAL_BATCH,
            "epochs": 1,
            "warmup_epochs": 0,
            "weight_lr": WEIGHT_LR,
            "weight_lr_min": WEIGHT_LR,  # a constant learning rate
            "weight_momentum": 0.0,
            "weight_decay": 0.0,
            "latency_check": False,
            "deterministic": False,
            "seed": SEED,
        }
    )
    net = _supernet(strategy)
    searcher = Searcher(
        config, net, _table(net.space), data, data, run_dir, strategy, log=lambda line: None
    )
    with strategy.scope():
        searcher.steps.alpha_optimizer = keras.optimizers.SGD(ARCH_LR)
        searcher.steps.beta_optimizer = keras.optimizers.SGD(ARCH_LR)
        searcher.steps.alpha_optimizer.build(searcher.steps.alpha_variables)
        searcher.steps.beta_optimizer.build([net.beta])
    return searcher


def _plan_samples(net):
    """The ops of every step of PLAN, drawn once from the initial alpha (the
    same on every side): one op per layer uniformly for weight steps, two by
    softmax(alpha) for architecture steps."""
    import tensorflow as tf

    return [
        net.sample_ops(tf.constant([SEED, step], tf.int64), "two" if kind == "a" else "uniform")
        for step, kind in enumerate(PLAN)
    ]


def _local_values(strategy, variable) -> list[np.ndarray]:
    """Each local replica's copy of a variable."""
    return [np.array(v) for v in strategy.experimental_local_results(variable.value)]


def _run_plan(searcher, samples) -> dict[str, np.ndarray]:
    """Runs PLAN on consecutive global batches; every variable (first local
    copy) before and after, each local copy's largest difference from the
    first after, and what each step reported."""
    net, strategy = searcher.net, searcher.strategy
    out = {f"init/{k}": np.array(v.numpy()) for k, v in enumerate(net.variables)}
    batches = searcher._batches(searcher.weight_data, None, 1, 0)  # no shuffle
    reported = []
    for kind, sample in zip(PLAN, samples):
        step = searcher.steps.arch_step if kind == "a" else searcher.steps.weight_step
        values = step(next(batches), sample)
        reported.append([float(values.get(k, np.nan)) for k in ("ce", "loss")])
        searcher.global_step.assign_add(1)
    spread = 0.0
    for k, v in enumerate(net.variables):
        copies = _local_values(strategy, v)
        out[f"final/{k}"] = copies[0]
        spread = max([spread] + [float(np.abs(c - copies[0]).max()) for c in copies])
    out["replica_spread"] = np.array(spread)
    out["reported"] = np.array(reported)
    out["replicas"] = np.array(strategy.num_replicas_in_sync)
    return out


def _variable_kinds(net) -> list[str]:
    arch = {id(v) for v in net.arch_variables}
    trainable = {id(v) for v in net.trainable_variables}
    kinds = []
    for v in net.variables:
        if id(v) in arch:
            kinds.append(f"arch:{v.name}")
        elif id(v) in trainable:
            kinds.append("weights")
        else:
            kinds.append("bn_statistics")
    return kinds


def _case_steps(out_dir: Path, distributed: str) -> None:
    """PLAN on one device and under ``distributed`` (mirrored: two logical
    CPUs in this process; multi_worker: this worker of TF_CONFIG's cluster,
    worker 0 also running the one-device reference)."""
    from densenas_tf.core.runtime import make_strategy

    if distributed == "mirrored":
        _split_cpu()
        name = "steps"
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op.
    strategy = make_strategy(distributed)
    if distributed == "multi_worker":
        name = f"worker{strategy.cluster_resolver.task_id}"
    import tensorflow as tf

    data = _images(GLOBAL_BATCH * len(PLAN))
    results = {}
    two = _searcher(strategy, out_dir / f"{name}_run", data)
    samples = _plan_samples(two.net)
    results.update({f"two/{k}": v for k, v in _run_plan(two, samples).items()})
    if distributed == "mirrored" or name == "worker0":
        one = _searcher(tf.distribute.get_strategy(), out_dir / f"{name}_one", data)
        results.update({f"one/{k}": v for k, v in _run_plan(one, samples).items()})
    if distributed == "mirrored":
        # The summary's replica spread: nil after the steps; then one replica's
        # copy of alpha_stack is moved by 0.25 behind the strategy's back.
        def summary_spread():
            return np.array(two._finish_run([])[1]["arch_replica_max_abs_diff"])

        results["two/summary_spread"] = summary_spread()
        copies = strategy.experimental_local_results(two.net.alpha_stack.value)
        copies[1].assign(copies[1] + 0.25)
        results["two/planted_spread"] = summary_spread()
    results["kinds"] = np.array(_variable_kinds(two.net))
    results["paths"] = np.array([v.path.split("/", 1)[-1] for v in two.net.variables])
    np.savez(out_dir / f"{name}.npz", **results)


class _GradientRecorder:
    """Stands in for an optimizer: keeps the gradients each replica hands it."""

    def __init__(self):
        self.grads = {}

    def apply_gradients(self, grads_and_vars):
        import tensorflow as tf

        replica = int(tf.distribute.get_replica_context().replica_id_in_sync_group)
        self.grads[replica] = [np.array(tf.convert_to_tensor(g)) for g, _ in grads_and_vars]


OBJECTIVES = {
    "paper": {"kind": "paper", "lam": 0.3, "tau_ms": 15.0},
    "target": {"kind": "target", "lam": 0.5, "target_ms": 0.3},
    "proxyless": {"kind": "proxyless", "target_ms": 0.3, "beta": 0.6},
}


def _reference_loss(kind: str, ce, latency):
    """Each objective's loss on one device, written out here (not the Objective's)."""
    import tensorflow as tf

    spec = OBJECTIVES[kind]
    if kind == "paper":
        return ce + spec["lam"] * tf.math.log(latency) / np.log(spec["tau_ms"])
    if kind == "target":
        return ce + spec["lam"] * tf.maximum(latency / spec["target_ms"] - 1.0, 0.0)
    return ce * (latency / spec["target_ms"]) ** spec["beta"]


def _case_arch_gradients(out_dir: Path) -> None:
    """The architecture step's per-replica gradients of alpha and beta, summed,
    and one device's gradients of the loss on the whole batch, per objective."""
    _split_cpu()
    import tensorflow as tf

    from densenas_tf.data.pipelines import normalize
    from densenas_tf.search.objectives import Objective

    images, labels = _images(GLOBAL_BATCH)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    searcher = _searcher(strategy, out_dir / "run", (images, labels))
    one = _supernet(tf.distribute.get_strategy())
    sample = one.sample_ops(tf.constant([SEED, 7], tf.int64), "two")
    results = {"replicas": np.array(strategy.num_replicas_in_sync)}
    for kind, spec in OBJECTIVES.items():
        searcher.steps.objective = Objective.from_config(spec)
        searcher.steps.alpha_optimizer = _GradientRecorder()
        searcher.steps.beta_optimizer = _GradientRecorder()
        batch = next(searcher._batches((images, labels), None, 0, 0))
        values = searcher.steps.arch_step(batch, sample)  # eq. 9 moves nothing: no update applied
        alpha, beta = searcher.steps.alpha_optimizer.grads, searcher.steps.beta_optimizer.grads
        assert sorted(alpha) == sorted(beta) == [0, 1]
        for r in (0, 1):
            for name, g in zip(("alpha_head", "alpha_stack", "beta"), (*alpha[r], *beta[r])):
                results[f"{kind}/replica{r}/{name}"] = g
        results[f"{kind}/replica_loss_sum"] = np.array(float(values["loss"]))
        with tf.GradientTape() as tape:
            logits = one(normalize(images), mode="two", sample=sample, training=True)
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            latency = searcher.expected_latency(*one.latency_weights("two", sample))
            loss = _reference_loss(kind, ce, latency)
        grads = tape.gradient(loss, one.arch_variables)
        for name, g in zip(("alpha_head", "alpha_stack", "beta"), grads):
            results[f"{kind}/one/{name}"] = np.array(tf.convert_to_tensor(g))
        results[f"{kind}/one_loss"] = np.array(float(loss))
    np.savez(out_dir / "arch_gradients.npz", **results)


def _case_batch_norm(out_dir: Path) -> None:
    """A synchronised BN layer fed all ones on one replica and all threes on
    the other; and the SuperNet in training mode on two differently
    distributed halves, against one device on the whole batch."""
    _split_cpu()
    import keras
    import tensorflow as tf

    from densenas_tf.data.pipelines import normalize
    from densenas_tf.nn import op_layers

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"replicas": np.array(strategy.num_replicas_in_sync)}

    # The function every SuperNet batch norm runs (op_layers.fused_batch_norm).
    def layer():
        bn = keras.layers.BatchNormalization(synchronized=True, momentum=0.9, epsilon=1e-3)
        bn.build((None, 3, 3, 2))
        return bn

    with strategy.scope():
        bn = layer()
    halves = [np.full((4, 3, 3, 2), 1.0, np.float32), np.full((4, 3, 3, 2), 3.0, np.float32)]
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(halves[context.replica_id_in_sync_group])
    )
    outputs = strategy.run(lambda x: op_layers.fused_batch_norm(bn, x, True), args=(inputs,))
    results["ones_threes/outputs"] = np.stack(
        [np.array(y) for y in strategy.experimental_local_results(outputs)]
    )
    results["ones_threes/moving_mean"] = np.stack(_local_values(strategy, bn.moving_mean))
    results["ones_threes/moving_variance"] = np.stack(_local_values(strategy, bn.moving_variance))
    single = layer()
    results["ones_threes/one_outputs"] = np.array(
        op_layers.fused_batch_norm(single, tf.constant(np.concatenate(halves)), True)
    )
    results["ones_threes/one_moving_mean"] = np.array(single.moving_mean)
    results["ones_threes/one_moving_variance"] = np.array(single.moving_variance)

    # The SuperNet: one replica gets dark images, the other bright ones (+60).
    images = _images(GLOBAL_BATCH, seed=SEED + 1)[0].astype(np.float32)
    images[GLOBAL_BATCH // 2 :] += 60.0
    x = np.array(normalize(images))
    two, one = _supernet(strategy), _supernet(tf.distribute.get_strategy())
    sample = one.sample_ops(tf.constant([SEED, 3], tf.int64), "two")
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(np.split(x, 2)[context.replica_id_in_sync_group])
    )
    logits = strategy.run(
        lambda batch: two(batch, mode="two", sample=sample, training=True), args=(per_replica,)
    )
    results["net/logits"] = np.concatenate(
        [np.array(t) for t in strategy.experimental_local_results(logits)]
    )
    results["net/one_logits"] = np.array(one(x, mode="two", sample=sample, training=True))
    statistics = [
        (k, v) for k, v in enumerate(two.variables) if v.name in ("moving_mean", "moving_variance")
    ]
    results["net/statistics"] = np.array([v.path for _, v in statistics])
    for k, v in statistics:
        results[f"net/replicas/{v.path}"] = np.stack(_local_values(strategy, v))
        results[f"net/one/{v.path}"] = np.array(one.variables[k].numpy())
    layers = []
    for owner in two.compiled_layers():
        layers.extend(
            (f"{owner.name}/{role}", bool(bn.synchronized))
            for role, bn in owner.op_layers.items()
            if isinstance(bn, keras.layers.BatchNormalization)
        )
    results["net/bn_layers"] = np.array([name for name, _ in layers])
    results["net/bn_synchronized"] = np.array([flag for _, flag in layers])
    np.savez(out_dir / "batch_norm.npz", **results)


CASES = {
    "arch_gradients": _case_arch_gradients,
    "batch_norm": _case_batch_norm,
    "steps": lambda out_dir: _case_steps(out_dir, "mirrored"),
    "multi_worker": lambda out_dir: _case_steps(out_dir, "multi_worker"),
}


# ----- the test side ------------------------------------------------------------------


def _run_case(case: str, out_dir: Path) -> dict[str, np.ndarray]:
    command = [sys.executable, str(Path(__file__).resolve()), case, str(out_dir)]
    result = subprocess.run(command, env=python_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out_dir / f"{case}.npz") as data:
        return dict(data)


def _relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """|got - want| / |want| over a group of arrays (Euclidean norms)."""
    num = sum(float(np.sum((g - w) ** 2)) for g, w in zip(got, want))
    den = sum(float(np.sum(w**2)) for w in want)
    assert den > 0.0
    return float(np.sqrt(num / den))


def test_arch_loss_gradients_summed_over_replicas_equal_one_device(tmp_path):
    """Each replica's cross-entropy (scaled to the global batch) plus its share
    of the latency term: summed over two replicas, the gradients of alpha and
    beta are one device's gradients of the objective on the whole batch."""
    r = _run_case("arch_gradients", tmp_path)
    assert r["replicas"] == 2
    for kind in OBJECTIVES:
        assert float(r[f"{kind}/replica_loss_sum"]) == pytest.approx(
            float(r[f"{kind}/one_loss"]), rel=1e-5
        )
        for name in ("alpha_head", "alpha_stack", "beta"):
            parts = [r[f"{kind}/replica{k}/{name}"] for k in (0, 1)]
            want = r[f"{kind}/one/{name}"]
            assert np.abs(want).max() > 1e-4, (kind, name)  # a gradient worth comparing
            # Neither replica's share alone is the whole gradient.
            assert all(_relative_error([p], [want]) > 0.2 for p in parts), (kind, name)
            error = _relative_error([parts[0] + parts[1]], [want])
            assert error < 1e-3, (kind, name, error)


def test_synchronized_batch_norm_normalises_with_the_global_batch(tmp_path):
    r = _run_case("batch_norm", tmp_path)
    assert r["replicas"] == 2
    # All ones on one replica, all threes on the other: the global batch has
    # mean 2 and variance 1 (its own replica's statistics would say 1 or 3, and 0).
    eps, momentum, count = 1e-3, 0.9, 2 * 4 * 3 * 3
    expected = np.concatenate([np.full((4, 3, 3, 2), v) for v in (-1.0, 1.0)]) / np.sqrt(1 + eps)
    outputs = r["ones_threes/outputs"]
    np.testing.assert_allclose(np.concatenate(outputs), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(r["ones_threes/one_outputs"], expected, rtol=1e-6, atol=1e-6)
    # The moving averages start at mean 0 and variance 1; the variance that
    # enters them is the unbiased one (n / (n - 1)), as TensorFlow's fused kernel has it.
    mean = (1 - momentum) * 2.0
    variance = momentum * 1.0 + (1 - momentum) * count / (count - 1)
    for replica in (0, 1):
        np.testing.assert_allclose(r["ones_threes/moving_mean"][replica], [mean] * 2, rtol=1e-6)
        np.testing.assert_allclose(
            r["ones_threes/moving_variance"][replica], [variance] * 2, rtol=1e-6
        )
    np.testing.assert_allclose(r["ones_threes/one_moving_mean"], [mean] * 2, rtol=1e-6)
    np.testing.assert_allclose(r["ones_threes/one_moving_variance"], [variance] * 2, rtol=1e-6)

    # Every batch norm of the SuperNet is synchronised...
    layers, flags = list(r["net/bn_layers"]), list(r["net/bn_synchronized"])
    assert len(layers) == sum(str(p).endswith("moving_mean") for p in r["net/statistics"]) > 10
    assert [name for name, flag in zip(layers, flags) if not flag] == []
    # ...so in training mode two replicas (dark and bright halves) compute one
    # device's logits on the whole batch and its moving statistics, on both replicas.
    one = r["net/one_logits"]
    np.testing.assert_allclose(r["net/logits"], one, rtol=0, atol=5e-5 * np.abs(one).max())
    for path in r["net/statistics"]:
        want = r[f"net/one/{path}"]
        for copy in r[f"net/replicas/{path}"]:
            np.testing.assert_allclose(copy, want, rtol=1e-4, atol=1e-6, err_msg=str(path))


def _assert_plan_matches_one_device(r: dict[str, np.ndarray]) -> None:
    """The variables after PLAN under a strategy against one device's, from
    the same start: the change of the weights, of the batch-norm statistics
    and of alpha and beta together, each within its TOLERANCE of one device's
    change (alpha and beta together: one of them alone can move little when
    its cross-entropy and latency gradients nearly cancel)."""
    groups = {}
    for k, (kind, path) in enumerate(zip(r["kinds"], r["paths"])):
        kind = str(kind)
        np.testing.assert_array_equal(r[f"two/init/{k}"], r[f"one/init/{k}"], err_msg=str(path))
        got, want = groups.setdefault("arch" if kind.startswith("arch:") else kind, ([], []))
        got.append(r[f"two/final/{k}"] - r[f"two/init/{k}"])
        want.append(r[f"one/final/{k}"] - r[f"one/init/{k}"])
    errors = {group: _relative_error(*pair) for group, pair in groups.items()}
    assert sorted(errors) == sorted(TOLERANCE)
    assert all(errors[g] < TOLERANCE[g] for g in errors), errors
    # What the steps reported (cross-entropy, and loss for architecture steps) agrees too.
    np.testing.assert_allclose(r["two/reported"], r["one/reported"], rtol=1e-4)


@pytest.fixture(scope="module")
def mirrored_steps(tmp_path_factory):
    return _run_case("steps", tmp_path_factory.mktemp("steps"))


def test_mirrored_on_two_cpus_matches_one_device(mirrored_steps):
    """Four weight steps and four architecture steps under MirroredStrategy
    on two logical CPUs, on the same global batches with the same drawn ops,
    change the weights, batch-norm statistics and alpha and beta as one device does."""
    r = mirrored_steps
    assert r["two/replicas"] == 2 and r["one/replicas"] == 1
    assert r["two/replica_spread"] == 0.0  # the replicas hold identical values
    _assert_plan_matches_one_device(r)


def test_the_summary_reports_how_far_replicas_drifted_apart(mirrored_steps):
    """summary.json's arch_replica_max_abs_diff compares every replica's copy
    of alpha and beta: 0 after the steps, 0.25 once one copy was moved by 0.25."""
    assert float(mirrored_steps["two/summary_spread"]) == 0.0
    assert float(mirrored_steps["two/planted_spread"]) == pytest.approx(0.25, abs=1e-6)


def test_two_workers_on_localhost_match_one_device(tmp_path):
    """The same steps under MultiWorkerMirroredStrategy, one replica in each of
    two processes: the workers end identical, and as one device on the same
    global batches (each worker got its half of every batch)."""
    workers = [f"localhost:{port}" for port in free_ports(2)]
    processes = []
    try:
        for index in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            command = [sys.executable, str(Path(__file__).resolve()), "multi_worker", str(tmp_path)]
            processes.append(
                subprocess.Popen(
                    command,
                    env=python_env(TF_CONFIG=json.dumps(config)),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for process in processes:
            _, stderr = process.communicate(timeout=600)
            assert process.returncode == 0, stderr[-4000:]
    finally:  # a worker left waiting for its failed peer is not left running
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    first, second = (dict(np.load(tmp_path / f"worker{k}.npz")) for k in (0, 1))
    assert first["two/replicas"] == second["two/replicas"] == 2
    assert first["two/replica_spread"] == second["two/replica_spread"] == 0.0
    for key, value in first.items():
        if key.startswith("two/"):
            np.testing.assert_array_equal(second[key], value, err_msg=key)
    _assert_plan_matches_one_device(first)


if __name__ == "__main__":
    CASES[sys.argv[1]](Path(sys.argv[2]))
