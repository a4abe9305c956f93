"""Speed and memory of the search's steps (``tools/bench_step.py``).

For one space at one batch size: the median time of a weight step (one op per
layer, drawn by softmax(alpha)), an architecture step (two ops per layer,
cross-entropy plus the latency term, Adam) and an all-ops forward, each after
warm-up (every op's graph traced first, as over a search's first steps; the
tracing time is reported as ``trace_s``), run through the same Searcher code
the search uses. The input is a
fixed batch of pixels: a step's cost does not depend on their values, so this
measures compute only (the search's input pipeline prefetches in parallel).

Each step's multiply-adds come from the drawn ops (``step_mult_adds``) and are
compared with the machine's dense matrix-multiply rate. A convolution's (or the
classifier's) backward is two products of its forward's size: the gradient of
its input and that of its kernel. The weight step computes both everywhere:
three forwards. The architecture step differentiates alpha and beta only, with
the kernels held constant: a forward and the input gradients, of the layers
after the first architecture parameter only (see ``step_mult_adds``); its
``arch_kernel_grads`` variant computes kernel gradients too: three forwards.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from densenas_tf.latency.measure import timed_runs
from densenas_tf.latency.table import LatencyTable, default_table_path
from densenas_tf.nn.mixed import Execution
from densenas_tf.nn.supernet import OpSample, SuperNet
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.searcher import Searcher
from densenas_tf.space import ops
from densenas_tf.space.describe import supernet_mult_adds
from densenas_tf.space.spaces import load_space

VARIANTS = (
    "default",
    "eager_steps",
    "eager_ops",
    "layered_forward",
    "arch_kernel_grads",
    "nested",
    "deterministic",
    "op_branches",
    "static_draw",
)


# The variants whose steps run eagerly, each op dispatched from Python
# (``graph_steps: false``); the others trace each kind of step as one graph.
EAGER_VARIANTS = ("eager_steps", "eager_ops", "layered_forward")
# The variants whose forward takes SuperNet._direct_call (eager, each op's
# coefficient applied inside its graph); the others go layer by layer
# (SuperNet.call: traced steps, and the eager variants undoing _direct_call).
DIRECT_VARIANTS = ("eager_steps",)


def stem_mult_adds(space) -> float:
    """Multiply-adds per image of the stem: its 3x3 conv and its op."""

    stem, size = space.stem, space.blocks[0].feature_map_size
    conv = ops.conv_mult_adds(space.input_shape[2], stem.conv_width, 3, size)
    return float(conv + ops.op_mult_adds(stem.op, stem.conv_width, stem.width, size, 1))


def step_mult_adds(space, head_counts, stack_counts, step: str, variant: str = "default") -> float:
    """Multiply-adds per image of one ``step`` (``weight`` or ``arch``) of
    ``bench_space``'s ``variant`` in which op o of head row r runs
    head_counts[r, o] times, likewise stacking rows (as in
    ``describe.supernet_mult_adds``, which counts the forward).

    The weight step, and the architecture step of ``arch_kernel_grads``, take
    the gradients of every kernel, and so of every layer's input: three
    forwards. The lean architecture step (every other variant) takes input
    gradients only, and only where the tape recorded the layer: not in the
    stem (its images and kernels are not watched, and no architecture
    parameter comes before it), so a forward plus the forward without the stem.
    The eager direct forward (``eager_steps``) runs each drawn op as one traced
    graph with its coefficient (path probability x op weight) as an input, so
    every op after the stem is recorded and its graph's backward runs whole;
    the layered forward (traced steps, ``eager_ops``, ``layered_forward``)
    weights the ops' outputs outside them, so the ops on block 0's output (its
    head ops and a final conv from it), whose inputs do not depend on alpha or
    beta, get no backward either.
    """

    if step not in ("weight", "arch"):
        raise ValueError(f"unknown step {step!r}; steps are 'weight' and 'arch'")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; variants are {VARIANTS}")
    head_counts, stack_counts = np.asarray(head_counts), np.asarray(stack_counts)
    forward = supernet_mult_adds(space, head_counts, stack_counts)
    if step == "weight" or variant == "arch_kernel_grads":
        return 3.0 * forward
    constant = stem_mult_adds(space)  # the forward on what no gradient reaches
    if variant not in DIRECT_VARIANTS:
        from_stem = np.zeros_like(head_counts)
        rows = [space.head_row(e) for e in space.head_edges if e.src == 0]
        from_stem[rows] = head_counts[rows]
        no_stack = np.zeros_like(stack_counts)
        constant += supernet_mult_adds(space, from_stem, no_stack) - supernet_mult_adds(
            space, np.zeros_like(head_counts), no_stack
        )
        first = space.blocks[0]
        finals = sum(e.src == 0 for e in space.final_edges)
        constant += finals * ops.conv_mult_adds(
            first.width, space.final_conv_width, 1, first.feature_map_size
        )
    return 2.0 * forward - constant


def worker_env(root: str | None = None) -> dict[str, str] | None:
    """The environment of a benchmark worker (None: this process's).

    ``root``: a checkout whose ``densenas_tf`` the worker imports (first on
    its PYTHONPATH), e.g. an older commit timed against this one. It runs
    with the environment the user gave, not with the oneDNN setting this
    package chose (an older checkout gets TensorFlow's own default)."""

    import densenas_tf

    if root is None:
        return None
    env = dict(os.environ)
    if densenas_tf.ONEDNN_SET_HERE:
        env.pop(densenas_tf.ONEDNN_FLAG, None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


def run_worker(
    script: str, args: list[str], label: str, root: str | None = None
) -> dict[str, Any] | None:
    """Runs ``script`` with ``args`` in its own process (so each measurement has
    a fresh process and its own peak memory) and returns the JSON on its last
    stdout line; None, with an error naming ``label``, when it failed.
    ``root``: see ``worker_env``."""

    start = time.time()
    done = subprocess.run(
        [sys.executable, script, *args], stdout=subprocess.PIPE, text=True, env=worker_env(root)
    )
    if done.returncode != 0:
        print(f"error: {label} failed (see above)", file=sys.stderr)
        return None
    print(f"{label} done in {time.time() - start:.0f} s", file=sys.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def onednn_in_worker(root: str | None = None) -> bool:
    """Whether a plain TensorFlow started in a worker's environment (``worker_env``)
    runs its oneDNN kernels: for a baseline checkout that does not report it."""

    code = (
        "from tensorflow.python.util import _pywrap_util_port as p; print(bool(p.IsMklEnabled()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=worker_env(root),
        check=True,
    )
    return done.stdout.strip().splitlines()[-1] == "True"


def matmul_rate(size: int = 1024, runs: int = 10) -> float:
    """Multiply-adds per second of a float32 size x size matmul (TensorFlow, this machine)."""
    import tensorflow as tf

    a = tf.random.stateless_normal([size, size], seed=[1, 2])
    b = tf.random.stateless_normal([size, size], seed=[3, 4])
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    times = timed_runs(lambda: matmul(a, b).numpy(), warmup=3, runs=runs)
    return size**3 / statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_space(
    space_name: str,
    batch_size: int,
    warmup: int = 3,
    runs: int = 10,
    log: Callable[[str], None] = lambda line: None,
    variant: str = "default",
    table=None,
    timer: Callable[[Callable[[], object], int, int], list[float]] | None = None,
    profile_steps: int = 0,
    memory: bool = False,
) -> dict[str, Any]:
    """Times the three steps on ``space_name`` (a preset or a space file);
    returns the figures (see module doc).

    ``table``: the LatencyTable of the architecture step's latency term
    (default: the space's shipped one). ``timer(run, warmup, runs)`` times the
    steps: it calls ``run`` warmup times, then runs times, and returns the
    seconds of the timed calls (default: ``latency_measure.timed_runs``).

    ``variant`` undoes one speed-up, to measure what it is worth:
    ``eager_steps`` (each step runs eagerly, its ops' graphs dispatched from
    Python, instead of one traced graph per kind of step; the next three undo
    a speed-up of that eager path), ``eager_ops``
    (ops run kernel by kernel from Python instead of as traced graphs),
    ``layered_forward`` (the supernet forward goes layer by layer through
    DenseBlock and MixedOp, with their per-layer slicing and mixing ops, instead
    of ``SuperNet._direct_call``) or ``arch_kernel_grads`` (the architecture
    step computes kernel gradients too). Two more variants measure what a
    search option costs: ``nested`` (``weight_sharing: nested``: the ops of a
    mixed layer slice one shared kernel) and ``deterministic`` (TensorFlow's
    op determinism, ``deterministic: true``). ``op_branches`` undoes
    ``switched_ops`` in the traced steps: each mixed layer switches between
    whole candidate ops instead of running one MBConv on the drawn op's
    variables. ``static_draw`` measures the floor under the traced steps: one
    draw per kind of step, fixed, traced with the draw as constants, so the
    graph holds the drawn ops and nothing else (no switch, no gather of the
    drawn op's variables): what TensorFlow's kernels take for that step's
    computation. It adds ``weight_step_switched_s`` and ``arch_step_switched_s``,
    the default traced steps timed on the same two draws.

    ``profile_steps``: after the timing, run TensorFlow's profiler over that
    many steps of each kind and add the time per kernel type (``profile``:
    step -> kernel -> milliseconds per step, summed over executor threads).

    ``memory``: add ``memory``: the resident memory before and after the
    first weight step, architecture step and all-ops forward (whose first
    calls build their graphs) and those graphs' sizes. The graphs are serialised for
    counting after ``peak_rss_mb`` is read, so it does not include that.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; variants are {VARIANTS}")
    import keras
    import tensorflow as tf

    space = load_space(space_name)
    if table is None:
        table = LatencyTable.load(default_table_path(space.name))
    timer = timer or timed_runs
    config = SearchConfig(
        space=space_name,
        batch_size=batch_size,
        epochs=2,
        warmup_epochs=0,
        graph_steps=variant not in EAGER_VARIANTS,
    )
    keras.utils.set_random_seed(0)
    log(f"{space_name}: building the supernet")
    if variant == "deterministic":
        tf.config.experimental.enable_op_determinism()
    execution = Execution(
        compiled_ops=variant != "eager_ops",
        direct_forward=variant != "layered_forward",
        graph_forward_all=variant not in EAGER_VARIANTS,
        switched_variables=variant != "op_branches",
    )
    net = SuperNet.from_space(
        space, weight_sharing="nested" if variant == "nested" else "none", execution=execution
    )
    initial = net.get_weights()
    shape = (batch_size, *space.input_shape)
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    labels = np.arange(batch_size, dtype=np.int32) % space.num_classes
    split = (pixels, labels)

    with tempfile.TemporaryDirectory() as run_dir:
        searcher = Searcher(config, net, table, split, split, run_dir, log=log)
        search_steps = searcher.steps
        search_steps.lean_arch = variant != "arch_kernel_grads"
        images = tf.constant((pixels.astype(np.float32) / 255.0 - 0.5) / 0.25)
        batch = (images, tf.constant(labels))
        step = {"n": 0}

        def draw(policy):
            step["n"] += 1
            return net.sample_ops(tf.constant([0, step["n"]], tf.int64), policy)

        def counts(sample):
            def one_hot(indices, n):
                out = np.zeros((len(indices), n))
                for r, idx in enumerate(np.asarray(indices)):
                    out[r, np.atleast_1d(idx)] = 1.0
                return out

            return (
                one_hot(sample.head, len(space.head_ops)),
                one_hot(sample.stack, len(space.stacking_ops)),
            )

        macs = {"weight": [], "arch": []}

        def counted(kind, sample_of, run):
            """A timed ``kind`` step: takes its draw (``sample_of()``), counts
            its multiply-adds, runs ``run(sample)`` and reads its figures."""

            def step_fn():
                sample = sample_of()
                macs[kind].append(step_mult_adds(space, *counts(sample), kind, variant))
                return {k: float(v) for k, v in run(sample).items()}

            return step_fn

        weight_step = counted(
            "weight", lambda: draw("softmax"), lambda s: search_steps.weight_step(batch, s)
        )
        arch_step = counted("arch", lambda: draw("two"), lambda s: search_steps.arch_step(batch, s))

        def forward_all():
            return net(images, mode="all", training=False).numpy()

        results: dict[str, Any] = {
            "space": space_name,
            "batch_size": batch_size,
            "variant": variant,
            "onednn": onednn_enabled(),
        }
        # Trace every op's graphs first (a search does so over its first steps),
        # so the timed steps are the steady state; the tracing time is reported.
        log(f"{space_name}: tracing every op")
        start = time.perf_counter()
        rows_h, rows_s = len(space.head_edges), len(space.stacking_layers)
        nh, ns = len(space.head_ops), len(space.stacking_ops)
        first_steps: dict[str, dict[str, float]] = {}
        for k in range(max(nh, ns)):  # op k of every layer in step k: every op once
            one = OpSample(tf.fill([rows_h], k % nh), tf.fill([rows_s], k % ns))
            two = OpSample(
                tf.stack([one.head, (one.head + 1) % nh], axis=1),
                tf.stack([one.stack, (one.stack + 1) % ns], axis=1),
            )
            for name, fn, sample in (
                ("weight_step", search_steps.weight_step, one),
                ("arch_step", search_steps.arch_step, two),
            ):
                if k == 0:  # the first call builds the step's graph
                    first_steps[name] = first_call(functools.partial(fn, batch, sample))
                else:
                    fn(batch, sample)
        net.set_weights(initial)  # the traced steps trained; start the timing afresh
        results["trace_s"] = time.perf_counter() - start
        steps = [("weight_step", weight_step), ("arch_step", arch_step)]
        if variant == "static_draw":
            fixed = {"weight": draw("softmax"), "arch": draw("two")}
            static = {kind: static_step(searcher, kind, fixed[kind])[0] for kind in fixed}
            switched = {"weight": search_steps.weight_step, "arch": search_steps.arch_step}
            steps = [
                (
                    f"{kind}_step",
                    counted(kind, lambda k=kind: fixed[k], lambda _, k=kind: static[k](*batch)),
                )
                for kind in fixed
            ] + [
                (
                    f"{kind}_step_switched",
                    counted(
                        kind, lambda k=kind: fixed[k], functools.partial(switched[kind], batch)
                    ),
                )
                for kind in fixed
            ]
        for name, fn in steps:
            log(f"{space_name}: {name} x {warmup + runs}")
            times = timer(fn, warmup, runs)
            median = statistics.median(times)
            results[f"{name}_s"] = median
            results[f"{name}_images_per_s"] = batch_size / median
            kind = name.split("_")[0]
            per_image = float(np.mean(macs[kind][-runs:]))  # the timed steps'
            results[f"{name}_mult_adds"] = per_image
            results[f"{name}_mult_adds_per_s"] = per_image * batch_size / median
        first_steps["forward_all"] = first_call(forward_all)  # builds its graph
        log(f"{space_name}: forward_all x {max(1, warmup // 2) + runs}")
        times = timer(forward_all, max(1, warmup // 2), runs)
        median = statistics.median(times)
        every = supernet_mult_adds(
            space,
            np.ones((len(space.head_edges), len(space.head_ops))),
            np.ones((len(space.stacking_layers), len(space.stacking_ops))),
        )
        results["forward_all_s"] = median
        results["forward_all_images_per_s"] = batch_size / median
        results["forward_all_mult_adds"] = every
        results["forward_all_mult_adds_per_s"] = every * batch_size / median
        if profile_steps:
            results["profile"] = {}
            for name, fn in (
                ("weight_step", weight_step),
                ("arch_step", arch_step),
                ("forward_all", forward_all),
            ):
                log(f"{space_name}: profiling {profile_steps} x {name}")
                results["profile"][name] = profile_kernels(fn, profile_steps, run_dir)
        results["peak_rss_mb"] = peak_rss_mb()
        if memory:
            samples = {"weight_step": ("weight", one), "arch_step": ("arch", two)}
            for name, (kind, sample) in samples.items():
                if search_steps.traced:
                    first_steps[name].update(
                        graph_size(search_steps.step_graph(kind, batch, sample))
                    )
            if execution.graph_forward_all:
                traced = net._forward_all_graph(False, True)
                graph = traced.get_concrete_function(tf.cast(images, net.compute_dtype)).graph
                first_steps["forward_all"].update(graph_size(graph))
            results["memory"] = first_steps
    return results


def static_step(searcher, kind: str, sample):
    """A ``kind`` step (``weight`` or ``arch``) of ``searcher`` on one device
    for the one draw ``sample``, traced with the draw held as constants: each
    mixed layer builds and runs only its drawn op (``MixedOp._run`` on a
    static index). Returns (run, traced): ``run(images, labels)`` does the step
    as the searcher's does (the architecture step's eq. 9 rebalancing inside
    its graph) and returns its figures; ``traced`` is the step's tf.function
    (here the same function)."""
    import tensorflow as tf

    steps = searcher.steps
    replica_fn = {"weight": steps.weight_replica, "arch": steps.arch_replica}
    if kind not in replica_fn:
        raise ValueError(f"unknown step {kind!r}; steps are {sorted(replica_fn)}")
    head, stack = np.asarray(sample.head, np.int32), np.asarray(sample.stack, np.int32)

    def step(images, labels):
        drawn = OpSample(tf.constant(head), tf.constant(stack))
        before = steps.alpha_before() if kind == "arch" else None
        values = replica_fn[kind](images, labels, drawn)
        if kind == "arch":
            steps.rebalance(before, drawn, values)
            values["latency_weight"] = steps.steer(values)
        return values

    traced = tf.function(step, autograph=False)
    return traced, traced


def first_call(run: Callable[[], object]) -> dict[str, float]:
    """Runs ``run`` once: the resident memory before and after, and its time."""
    rss, began = current_rss_mb(), time.perf_counter()
    run()
    return {
        "rss_before_mb": rss,
        "rss_after_mb": current_rss_mb(),
        "first_call_s": time.perf_counter() - began,
    }


def current_rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux: /proc/self/statm)."""

    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def graph_size(graph) -> dict[str, float]:
    """A traced step's size: its nodes (the graph's and those of the functions
    it calls, gradient and branch functions included), its functions, and its
    serialised size."""
    graph_def = graph.as_graph_def()
    functions = graph_def.library.function
    return {
        "graph_nodes": len(graph_def.node) + sum(len(f.node_def) for f in functions),
        "graph_functions": len(functions),
        "graph_mb": graph_def.ByteSize() / 2**20,
    }


def format_memory(results: list[dict[str, Any]]) -> str:
    """The table of ``memory`` figures (see bench_space)."""
    lines = [
        "| space | batch | variant | step | graph nodes | functions | serialised | "
        "resident before / after its first call | first call |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for step, m in r.get("memory", {}).items():
            graph = (
                f"{m['graph_nodes']:,} | {m['graph_functions']:,} | {m['graph_mb']:.1f} MB"
                if "graph_nodes" in m
                else "eager | | "
            )
            lines.append(
                f"| {r['space']} | {r['batch_size']} | {r['variant']} | {step} | {graph} | "
                f"{m['rss_before_mb']:,.0f} / {m['rss_after_mb']:,.0f} MB | "
                f"{m['first_call_s']:.1f} s |"
            )
    return "\n".join(lines)


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its oneDNN CPU kernels."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def _onednn_label(results: list[dict[str, Any]]) -> str:
    flags = {r.get("onednn") for r in results}
    if flags == {True}:
        return "on"
    return "off" if flags == {False} else "unknown"


def format_table(results: list[dict[str, Any]], matmul_macs_per_s: float) -> str:
    head = (
        "| space | batch | variant | step | median s | images/s | achieved GMAC/s | of matmul rate |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in results:
        switched = [f"{k}_step_switched" for k in ("weight", "arch") if f"{k}_step_switched_s" in r]
        for step in (*STEPS, *switched):
            rate = r[f"{step}_mult_adds_per_s"]
            lines.append(
                f"| {r['space']} | {r['batch_size']} | {r['variant']} | {step} | {r[f'{step}_s']:.3f} | "
                f"{r[f'{step}_images_per_s']:.1f} | {rate / 1e9:.2f} | "
                f"{rate / matmul_macs_per_s:.1%} |"
            )
    lines.append("")
    lines.append(
        "peak RSS: "
        + ", ".join(f"{r['space']} {r['peak_rss_mb']:.0f} MB" for r in results)
        + f"; dense float32 matmul: {matmul_macs_per_s / 1e9:.1f} GMAC/s; tracing every op once: "
        + ", ".join(f"{r['space']} {r['trace_s']:.0f} s" for r in results)
        + f"; oneDNN kernels: {_onednn_label(results)}"
    )
    return "\n".join(lines)


STEPS = ("weight_step", "arch_step", "forward_all")


def checkout_commit(root) -> str | None:
    """The commit a checkout has checked out (None when it is not a git checkout)."""

    done = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def compare_figures(ours: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step: the median over rounds of each checkout's median seconds and
    peak memory, and the speed-up (baseline seconds / ours)."""
    out: dict[str, Any] = {}
    for step in STEPS:
        mine = statistics.median(r[f"{step}_s"] for r in ours)
        theirs = statistics.median(r[f"{step}_s"] for r in baseline)
        out[step] = {
            "baseline_s": theirs,
            "ours_s": mine,
            "speedup": theirs / mine,
            "rounds_ours_s": [r[f"{step}_s"] for r in ours],
            "rounds_baseline_s": [r[f"{step}_s"] for r in baseline],
        }
    out["peak_rss_mb"] = {
        "baseline": max(r["peak_rss_mb"] for r in baseline),
        "ours": max(r["peak_rss_mb"] for r in ours),
    }
    out["onednn"] = {"baseline": _onednn_label(baseline), "ours": _onednn_label(ours)}
    return out


def format_comparison(
    comparisons: dict[str, dict[str, Any]], baseline_label: str, ours_label: str = "this checkout"
) -> str:
    """The baseline comparison as a Markdown table, one row per preset and step."""
    lines = [
        f"| preset | step | {baseline_label} s | {ours_label} s | speed-up | "
        f"peak RSS {baseline_label} / this (MB) | oneDNN {baseline_label} / this |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset, c in comparisons.items():
        rss = c["peak_rss_mb"]
        onednn = c.get("onednn", {})
        flags = f"{onednn.get('baseline', 'unknown')} / {onednn.get('ours', 'unknown')}"
        for step in STEPS:
            f = c[step]
            lines.append(
                f"| {preset} | {step} | {f['baseline_s']:.3f} | {f['ours_s']:.3f} | "
                f"{f['speedup']:.2f}x | {rss['baseline']:.0f} / {rss['ours']:.0f} | {flags} |"
            )
    return "\n".join(lines)


def profile_kernels(run: Callable[[], object], steps: int, work_dir: str) -> dict[str, Any]:
    """Runs ``run`` ``steps`` times under TensorFlow's profiler and returns
    ``{"wall_ms": per step, "kernels": {kernel type: ms per step}}``, the
    kernel times summed over the executor's threads (on two cores they can
    add up to about twice the wall time)."""

    import tensorflow as tf

    logdir = os.path.join(work_dir, f"profile_{time.monotonic_ns()}")
    run()  # one step outside the trace: nothing left to build
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(steps):
        run()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not paths:
        raise RuntimeError(f"TensorFlow's profiler wrote no trace under {logdir}")
    totals = kernel_times(paths[-1])
    return {
        "wall_ms": 1e3 * wall / steps,
        "kernels": {k: v / steps for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
    }


def kernel_times(xplane_path: str) -> dict[str, float]:
    """Milliseconds per TensorFlow kernel type in a profiler trace (XSpace):
    the events of the host's executor threads that name an op type. oneDNN's
    kernels (``_MklNativeConv2D``, ``_MklFusedBatchNormV3``) count under the
    op they implement (``Conv2D``, ``FusedBatchNormV3``)."""

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    totals: dict[str, float] = {}
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                kind = meta.display_name
                # Kernel events are "node name:OpType" with the type as display name.
                if not kind or ":" not in meta.name:
                    continue
                kind = re.sub(r"^_Mkl(Native)?(?=[_A-Z])", "", kind)
                totals[kind] = totals.get(kind, 0.0) + event.duration_ps / 1e9
    return totals


def format_profile(results: list[dict[str, Any]], matmul_macs_per_s: float, top: int = 15) -> str:
    """The per-kernel tables of profiled results as Markdown."""
    lines = [
        "# Where a search step's time goes",
        "",
        "Written by `python tools/bench_step.py --profile`: TensorFlow's profiler over a few",
        "steps of each kind after the timed ones; kernel time per step summed over the",
        "executor's threads (on two cores the kernels of one step can add up to twice",
        "its wall time); the rest of a step's wall time is Python, dispatch and waiting.",
        f"Dense float32 matmul on this machine: {matmul_macs_per_s / 1e9:.1f} GMAC/s. "
        f"TensorFlow's oneDNN kernels: {_onednn_label(results)} (their kernels are "
        "listed under the op they implement).",
        "",
    ]
    for r in results:
        for step in STEPS:
            prof = r.get("profile", {}).get(step)
            if not prof:
                continue
            kernels = prof["kernels"]
            total = sum(kernels.values())
            lines.append(
                f"## {r['space']}, batch {r['batch_size']}, {r['variant']}: {step} "
                f"(wall {prof['wall_ms']:.0f} ms per step while profiled, kernels {total:.0f} ms)"
            )
            lines += ["", "| kernel | ms per step | share of kernel time |", "|---|---|---|"]
            shown = list(kernels.items())[:top]
            for name, ms in shown:
                lines.append(f"| {name} | {ms:.1f} | {ms / total:.1%} |")
            rest = total - sum(ms for _, ms in shown)
            if rest > 0:
                lines.append(f"| (other kernels) | {rest:.1f} | {rest / total:.1%} |")
            lines.append("")
    return "\n".join(lines)
