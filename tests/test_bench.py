"""The step benchmark: its figures are consistent (not timed: speed is measured
by running tools/bench_step.py, never asserted in tests; the figures' arithmetic
is checked with an injected timer)."""

import json

import numpy as np
import pytest
from helpers import ROOT, made_up_table, micro_space, run_tool, write_space

from densenas_tf.experiments import bench
from densenas_tf.space.describe import supernet_mult_adds, uniform_sampled_mult_adds
from densenas_tf.space.spaces import SearchSpace

# Small enough to count by hand: 8x8x1 input, blocks 4 (8x8, the stem's), 8 and
# 12 (4x4); edges 0->1 and 0->2 (stride 2), 1->2, and 1, 2 -> final; one
# stacking layer (in block 1); two ops per layer, so the architecture step's
# two-op draw is always both.
DUO_SPACE = micro_space(
    "duo",
    widths=[4, 8, 12],
    feature_map_sizes=[8, 4, 4],
    stages=[0, 1, 1],
    stacking_layers=[0, 1, 0],
    num_classes=2,
    final_conv_width=16,
)
# Multiply-adds per image, by hand (out_h * out_w * k * k * c_in * c_out per conv,
# out_h * out_w * k * k * c per depthwise conv; an e3 op: expand 1x1 on its input,
# depthwise with the stride, project 1x1).
DUO_STEM = 8 * 8 * 9 * 1 * 4 + (8 * 8 * 9 * 4 + 8 * 8 * 4 * 4)  # 3x3 conv; k3 e1 op 4 -> 4
DUO_HEADS = {  # head row (edge) -> cost of op k3e3, of op k5e3
    0: (8 * 8 * 4 * 12 + 4 * 4 * 9 * 12 + 4 * 4 * 12 * 8, 8 * 8 * 4 * 12 + 4 * 4 * 25 * 12 + 4 * 4 * 12 * 8),
    1: (8 * 8 * 4 * 12 + 4 * 4 * 9 * 12 + 4 * 4 * 12 * 12, 8 * 8 * 4 * 12 + 4 * 4 * 25 * 12 + 4 * 4 * 12 * 12),
    2: (4 * 4 * 8 * 24 + 4 * 4 * 9 * 24 + 4 * 4 * 24 * 12, 4 * 4 * 8 * 24 + 4 * 4 * 25 * 24 + 4 * 4 * 24 * 12),
}  # fmt: skip
DUO_STACK = (4 * 4 * 8 * 24 + 4 * 4 * 9 * 24 + 4 * 4 * 24 * 8, 0)  # k3e3, skip
DUO_TAIL = 4 * 4 * 8 * 16 + 4 * 4 * 12 * 16 + 16 * 2  # final 1x1 convs from blocks 1, 2; classifier
DUO_ALL = DUO_STEM + sum(map(sum, DUO_HEADS.values())) + sum(DUO_STACK) + DUO_TAIL


@pytest.fixture(scope="module")
def duo(tmp_path_factory):
    """DUO_SPACE as a file, with a made-up latency table (the latency term's
    values do not change what a step computes)."""
    folder = tmp_path_factory.mktemp("duo")
    space_file = write_space(folder, DUO_SPACE)
    space = SearchSpace.from_config(DUO_SPACE)
    table = made_up_table(
        space,
        lambda k, key: 0.1 + 0.01 * k,
        overhead_ms=0.01,
        std_ms=0.001,
        count=10,
        versions={"tensorflow_version": "x"},
    )
    table_file = folder / "duo_lut.json"
    table.save(table_file)
    return {"file": str(space_file), "space": space, "table": table, "table_file": str(table_file)}


def test_duo_forward_counts_match_the_hand_counts(duo):
    space = duo["space"]
    assert [(e.src, e.dst) for e in space.head_edges] == [(0, 1), (0, 2), (1, 2)]
    ones = (np.ones((3, 2)), np.ones((1, 2)))
    assert supernet_mult_adds(space, *ones) == DUO_ALL == 81_824


def test_step_mult_adds_count_what_each_step_differentiates(duo):
    space = duo["space"]
    both = (np.ones((3, 2)), np.ones((1, 2)))  # what every two-op draw of DUO_SPACE runs
    # The weight step: forward, input and kernel gradients of the drawn ops (k3e3 everywhere).
    first = (np.eye(2)[[0, 0, 0]], np.eye(2)[[0]])
    one_path = DUO_STEM + sum(costs[0] for costs in DUO_HEADS.values()) + DUO_STACK[0] + DUO_TAIL
    for variant in bench.VARIANTS:
        assert bench.step_mult_adds(space, *first, "weight", variant) == 3 * one_path == 134_880
    assert bench.step_mult_adds(space, *both, "arch", "arch_kernel_grads") == 3 * DUO_ALL
    # The lean architecture step: the forward, then input gradients of every
    # layer but the stem (nothing before it depends on alpha or beta)...
    lean = 2 * DUO_ALL - DUO_STEM
    assert bench.DIRECT_VARIANTS == ("eager_steps",)
    assert bench.step_mult_adds(space, *both, "arch", "eager_steps") == lean == 158_016
    # ... and, layer by layer (traced steps too), not of the head ops on the
    # stem's output either.
    from_stem = sum(DUO_HEADS[0]) + sum(DUO_HEADS[1])
    layered = set(bench.VARIANTS) - {"eager_steps", "arch_kernel_grads"}
    assert layered == {
        "default",
        "eager_ops",
        "layered_forward",
        "nested",
        "deterministic",
        "op_branches",
        "static_draw",
    }
    for variant in layered:
        assert bench.step_mult_adds(space, *both, "arch", variant) == lean - from_stem == 124_992
    with pytest.raises(ValueError, match="unknown step 'both'"):
        bench.step_mult_adds(space, *both, "both")


@pytest.mark.slow
def test_bench_figures_come_from_the_timed_steps(duo, monkeypatch):
    """An injected timer gives known step times; a spy records the drawn ops."""
    from densenas_tf.search.steps import SearchSteps

    drawn = []  # (head, stack) op indices of every weight step run
    wrap = SearchSteps._wrap

    def spy_wrap(self, replica_fn, rebalance=False):
        step = wrap(self, replica_fn, rebalance)
        if replica_fn.__func__ is not SearchSteps.weight_replica:
            return step

        def spied(batch, sample):
            drawn.append((np.asarray(sample.head).copy(), np.asarray(sample.stack).copy()))
            return step(batch, sample)

        return spied

    monkeypatch.setattr(SearchSteps, "_wrap", spy_wrap)
    durations = {"weight": [1.0, 0.5, 0.25], "arch": [2.0, 4.0, 1.0], "forward": [0.25, 0.5, 0.125]}
    calls, timed = [], {}

    def timer(run, warmup, runs):
        kind = ("weight", "arch", "forward")[len(calls)]
        calls.append((warmup, runs))
        for _ in range(warmup):
            run()
        start = len(drawn)
        for _ in range(runs):
            run()
        timed[kind] = drawn[start:]
        return durations[kind]

    figures = bench.bench_space(duo["file"], 4, warmup=2, runs=3, table=duo["table"], timer=timer)
    assert calls == [(2, 3), (2, 3), (1, 3)]
    # Medians 0.5 s, 2 s and 0.25 s of 4 images.
    assert (figures["weight_step_s"], figures["weight_step_images_per_s"]) == (0.5, 8.0)
    assert (figures["arch_step_s"], figures["arch_step_images_per_s"]) == (2.0, 2.0)
    assert (figures["forward_all_s"], figures["forward_all_images_per_s"]) == (0.25, 16.0)
    # The weight steps timed: 3 forwards of the drawn ops (one per layer).
    assert len(timed["weight"]) == 3 and not timed["arch"] and not timed["forward"]
    per_step = []
    for head, stack in timed["weight"]:
        assert head.shape == (3,) and stack.shape == (1,)
        ops = sum(DUO_HEADS[row][op] for row, op in enumerate(head)) + DUO_STACK[stack[0]]
        per_step.append(3 * (DUO_STEM + ops + DUO_TAIL))
    assert figures["weight_step_mult_adds"] == pytest.approx(np.mean(per_step), rel=1e-12)
    assert figures["weight_step_mult_adds_per_s"] == pytest.approx(
        np.mean(per_step) * 4 / 0.5, rel=1e-12
    )
    # Every architecture step runs both ops of every layer; the traced step takes
    # no input gradients of the stem or of the head ops on its output.
    lean = 2 * DUO_ALL - DUO_STEM - sum(DUO_HEADS[0]) - sum(DUO_HEADS[1])
    assert figures["arch_step_mult_adds"] == lean
    assert figures["arch_step_mult_adds_per_s"] == lean * 4 / 2.0
    assert figures["forward_all_mult_adds"] == DUO_ALL
    assert figures["forward_all_mult_adds_per_s"] == DUO_ALL * 4 / 0.25


def test_graph_size_counts_the_called_functions_nodes():
    import tensorflow as tf

    @tf.function
    def pick(x, which):
        return tf.cond(which > 0, lambda: x * 2.0 + 1.0, lambda: x - 1.0)

    graph = pick.get_concrete_function(tf.constant(1.0), tf.constant(1)).graph
    size = bench.graph_size(graph)
    graph_def = graph.as_graph_def()
    assert size["graph_functions"] == len(graph_def.library.function) == 2  # the two branches
    # Each branch has an argument, its ops and an output: more than the outer graph alone.
    assert size["graph_nodes"] >= len(graph_def.node) + 2 * 2
    assert size["graph_mb"] == graph_def.ByteSize() / 2**20


def test_step_graph_names_the_kinds_of_step():
    from densenas_tf.search.steps import SearchSteps

    class Fake:
        traced = True
        traced_steps = []

    with pytest.raises(ValueError, match="unknown kind of step 'train'"):
        SearchSteps.step_graph(Fake(), "train", None, None)
    Fake.traced = False
    with pytest.raises(ValueError, match="graph_steps is off"):
        SearchSteps.step_graph(Fake(), "arch", None, None)


def test_mult_adds_of_op_counts(fashion_space):
    space = fashion_space
    heads, stacks = len(space.head_edges), len(space.stacking_layers)
    nh, ns = len(space.head_ops), len(space.stacking_ops)

    def cost(head, stack):
        return supernet_mult_adds(space, head, stack)

    first = (np.eye(nh)[np.zeros(heads, int)], np.eye(ns)[np.zeros(stacks, int)])
    last = (np.eye(nh)[np.full(heads, nh - 1)], np.eye(ns)[np.full(stacks, ns - 2)])
    every = (np.ones((heads, nh)), np.ones((stacks, ns)))
    fixed = cost(np.zeros((heads, nh)), np.zeros((stacks, ns)))  # stem, final convs, classifier
    # Linear in the op counts: two drawn ops cost the sum of each alone.
    both = (first[0] + last[0], first[1] + last[1])
    assert cost(*both) - fixed == cost(*first) - fixed + cost(*last) - fixed
    # k3e3 everywhere is cheaper than k7e6 everywhere, which is cheaper than every op.
    assert cost(*first) < cost(*last) < cost(*every)
    uniform = uniform_sampled_mult_adds(space)
    assert uniform == round(cost(np.full((heads, nh), 1 / nh), np.full((stacks, ns), 1 / ns)))


def _bench(*flags, timeout=600):
    return run_tool("bench_step", *flags, timeout=timeout)


@pytest.mark.slow
def test_bench_binary_on_a_small_batch(tmp_path, duo):
    out, profile = tmp_path / "bench.json", tmp_path / "profile.md"
    preset = f"{duo['file']}:2"
    result = _bench(
        f"--presets={preset}",
        f"--latency_table={duo['table_file']}",
        "--warmup=1",
        "--runs=2",
        f"--json_out={out}",
        "--profile",
        "--profile_steps=1",
        f"--profile_out={profile}",
        "--memory",
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(out.read_text())
    assert list(payload["presets"]) == [preset]
    figures = payload["presets"][preset]
    assert (figures["space"], figures["batch_size"], figures["variant"]) == (
        duo["file"],
        2,
        "default",
    )
    # The printed tables are the JSON's figures (speed against the JSON's matmul
    # rate, then the memory figures).
    table = bench.format_table([figures], payload["matmul_mult_adds_per_s"])
    assert result.stdout.strip() == table + "\n\n" + bench.format_memory([figures])
    # --memory: each traced step's first call, with its graph's size.
    assert sorted(figures["memory"]) == ["arch_step", "forward_all", "weight_step"]
    for step, m in figures["memory"].items():
        assert m["graph_nodes"] > 100 and m["graph_mb"] > 0
        # The steps switch (skip's conditional, the draws); every op of the
        # all-ops forward runs, with no branch.
        assert (m["graph_functions"] > 0) == (step != "forward_all"), step
        assert 0 < m["rss_before_mb"] <= figures["peak_rss_mb"]
        assert 0 < m["rss_after_mb"] <= figures["peak_rss_mb"]
        assert m["first_call_s"] > 0
    # An all-ops forward of the space (every op of every layer once).
    assert figures["forward_all_mult_adds"] == DUO_ALL
    # The profile: each step's kernels by type, the convolutions among them, and
    # the file's tables are those figures.
    text = profile.read_text()
    for step in bench.STEPS:
        kernels = figures["profile"][step]["kernels"]
        assert figures["profile"][step]["wall_ms"] > 0
        assert "DepthwiseConv2dNative" in kernels and all(ms >= 0 for ms in kernels.values())
        assert f"default: {step} (wall" in text
    assert "DepthwiseConv2dNativeBackpropFilter" in figures["profile"]["weight_step"]["kernels"]
    # The lean architecture step computes no kernel gradient of a depthwise conv.
    assert "DepthwiseConv2dNativeBackpropFilter" not in figures["profile"]["arch_step"]["kernels"]
    assert text == bench.format_profile([figures], payload["matmul_mult_adds_per_s"])


@pytest.mark.slow
def test_bench_against_a_baseline_checkout(tmp_path, duo):
    """--baseline times another checkout (here this one) alternately with this one."""
    out = tmp_path / "compare.json"
    result = _bench(
        f"--presets={duo['file']}:2",
        f"--latency_table={duo['table_file']}",
        f"--baseline={ROOT}",
        "--variants=eager_steps",  # this checkout's variant; the baseline runs its default
        "--rounds=2",
        "--warmup=0",
        "--runs=1",
        f"--json_out={out}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(out.read_text())
    assert payload["baseline"]["path"] == str(ROOT) and payload["rounds"] == 2
    comparison = payload["comparison"][f"{duo['file']}:2"]
    runs = payload["figures"][f"{duo['file']}:2"]
    assert len(runs["ours"]) == len(runs["baseline"]) == 2
    assert payload["ours"]["variant"] == "eager_steps"
    assert {r["variant"] for r in runs["ours"]} == {"eager_steps"}
    assert {r["variant"] for r in runs["baseline"]} == {"default"}
    for step in bench.STEPS:
        f = comparison[step]
        assert f["ours_s"] == np.median([r[f"{step}_s"] for r in runs["ours"]])
        assert f["speedup"] == pytest.approx(f["baseline_s"] / f["ours_s"])
    # Both workers say whether TensorFlow ran its oneDNN kernels (here the same checkout).
    assert comparison["onednn"]["ours"] == comparison["onednn"]["baseline"] in ("on", "off")
    assert result.stdout.strip() == bench.format_comparison(
        payload["comparison"],
        f"baseline {payload['baseline']['commit'][:7]}",
        "this checkout (eager_steps)",
    )
    # Four workers ran, alternating: ours, baseline, ours, baseline.
    order = [line for line in result.stderr.splitlines() if line.startswith("benchmarking")]
    assert [("ours" in line, "round 1" in line) for line in order] == [
        (True, True), (False, True), (True, False), (False, False)
    ]  # fmt: skip


@pytest.mark.slow
def test_a_baseline_comparison_takes_one_known_variant(tmp_path):
    for variants in ("default,eager_steps", "fastest"):
        result = _bench(f"--baseline={ROOT}", f"--variants={variants}", timeout=120)
        assert result.returncode != 0
        assert "--variants takes one variant for this checkout" in result.stderr


@pytest.mark.slow
def test_a_baseline_that_is_not_a_checkout_is_refused(tmp_path):
    result = _bench(f"--baseline={tmp_path}", timeout=120)
    assert result.returncode != 0
    assert "is not a checkout of this project" in result.stderr
    assert "git worktree add" in result.stderr


@pytest.mark.slow
def test_warmup_ablation_binary_evaluates_each_variant_and_caches_it(tmp_path):
    out, cache = tmp_path / "ablation.json", tmp_path / "cache"
    flags = [
        "--config=fashion_mnist_quick",
        '--variants=plain:weight_sharing="none",data.train_limit=640,batch_size=32,graph_steps=false;'
        'nested:weight_sharing="nested",data.train_limit=640,batch_size=32,graph_steps=false',
        "--eval_steps=1,3",
        f"--json_out={out}",
        f"--cache_dir={cache}",
    ]
    result = run_tool("bench_warmup", *flags, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["eval_steps"] == [1, 3]
    plain, nested = payload["variants"]
    assert (plain["variant"], nested["variant"]) == ("plain", "nested")
    for variant in (plain, nested):
        assert sorted(variant["accuracy"]) == ["1", "3"]
        # 128 architecture images in 4 batches of 32: accuracies are multiples of 1/128.
        for acc in variant["accuracy"].values():
            assert abs(acc * 128 - round(acc * 128)) < 1e-6
        assert f"| {variant['variant']} | {variant['weight_params']:,} |" in result.stdout
    assert nested["weight_params"] < plain["weight_params"] / 2
    assert len(list(cache.glob("*.json"))) == 2
    again = run_tool("bench_warmup", *flags, timeout=300)
    assert again.returncode == 0 and again.stderr.count("cached in") == 2
    assert json.loads(out.read_text()) == payload


def test_depthwise_shapes_cover_every_mbconv_op_of_a_space(fashion_space):
    from densenas_tf.experiments.bench_kernels import depthwise_shapes
    from densenas_tf.space import ops

    shapes = depthwise_shapes(fashion_space, 16)
    assert len(shapes) == len(set(shapes))
    # The stem block (width 8, 28x28) feeds the first stage's heads at stride 2.
    ops_ = [ops.parse_op(o) for o in fashion_space.head_ops]
    for op in (o for o in ops_ if not o.is_skip):
        assert (16, 28, 8 * op.expansion, op.kernel_size, 2) in shapes
    assert {s[3] for s in shapes} == {3, 5, 7}
    assert all(s[0] == 16 and s[4] in (1, 2) for s in shapes)


def test_depthwise_gradient_timing_compares_both_kernels_on_one_shape():
    from densenas_tf.experiments.bench_kernels import (
        format_depthwise_table,
        time_depthwise_gradient,
    )
    from densenas_tf.nn import op_layers

    rows = [
        time_depthwise_gradient(2, 9, 24, 5, 2, runs=2),
        time_depthwise_gradient(2, 8, 8, 3, 1, runs=2),
    ]
    for row in rows:
        assert row["same_ms"] > 0 and row["explicit_ms"] > 0
        assert row["max_abs_diff"] < 1e-4  # the two kernels compute the same gradient
        assert row["explicit_chosen"] == op_layers.eigen_depthwise_kernel_gradient(
            row["kernel_size"], row["channels"]
        )
    assert [r["explicit_chosen"] for r in rows] == [True, False]
    table = format_depthwise_table(rows, onednn=True)
    assert table.count("\n| 2 |") == 2
    assert "1 of 2 shapes take explicit padding" in table


@pytest.mark.slow
def test_kernel_bench_binary_prints_a_table(tmp_path):
    out = tmp_path / "kernels.json"
    result = run_tool("bench_kernels", "--presets=fashion_mnist:2", "--runs=1", f"--json_out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    from densenas_tf.experiments.bench_kernels import depthwise_shapes
    from densenas_tf.space.spaces import load_space

    shapes = depthwise_shapes(load_space("fashion_mnist"), 2)
    rows = json.loads(out.read_text())["fashion_mnist:2"]
    assert [
        tuple(r[k] for k in ("batch", "side", "channels", "kernel_size", "stride")) for r in rows
    ] == shapes
    assert "## fashion_mnist:2" in result.stdout
    assert sum(line.startswith("| 2 |") for line in result.stdout.splitlines()) == len(shapes)


def _switches(graph):
    """The Case (switch) nodes of a traced graph and of the functions it calls."""
    graph_def = graph.as_graph_def()
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    return sum(n.op in ("Case", "StatelessCase") for n in nodes)


@pytest.mark.slow
def test_a_static_draw_step_computes_what_the_traced_step_computes(duo, tmp_path, smooth_relu6):
    """bench.static_step (what --variants=static_draw times as the floor under
    the traced steps): the draw held in the graph as constants, so only the
    drawn ops are built and nothing switches; from the same weights on the same
    batch and draws, the same figures and the same weights, alpha and beta after
    a weight step and an architecture step as the traced steps. ReLU6 smoothed
    (conftest.smooth_relu6): the two graphs round differently."""
    import keras
    import tensorflow as tf

    from densenas_tf.nn.supernet import SuperNet
    from densenas_tf.search.config import SearchConfig
    from densenas_tf.search.searcher import Searcher

    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(4, dtype=np.int32) % 2
    batch = (tf.constant(pixels.astype(np.float32) / 255.0), tf.constant(labels))

    def searcher(name):
        keras.utils.set_random_seed(0)
        net = SuperNet.from_space(duo["space"], arch_init_seed=1, arch_init_std=0.5)
        config = SearchConfig(space=duo["file"], batch_size=4, epochs=2, warmup_epochs=0)
        split = (pixels, labels)
        return Searcher(
            config, net, duo["table"], split, split, tmp_path / name, log=lambda line: None
        )

    static, traced = searcher("static"), searcher("traced")
    assert traced.steps.traced
    np.testing.assert_array_equal(static.net.get_weights()[0], traced.net.get_weights()[0])
    for kind, policy in (("weight", "softmax"), ("arch", "two")):
        sample = traced.net.sample_ops(tf.constant([0, 3], tf.int64), policy)
        step, traced_static = bench.static_step(static, kind, sample)
        graph = traced_static.get_concrete_function(*batch).graph
        switched = traced.steps.step_graph(kind, batch, sample)
        assert _switches(graph) == 0  # nothing picks an op
        assert _switches(switched) > 0
        mine = step(*batch)
        theirs = getattr(traced.steps, f"{kind}_step")(batch, sample)
        assert sorted(mine) == sorted(theirs)
        for key in mine:
            np.testing.assert_allclose(float(mine[key]), float(theirs[key]), rtol=1e-5, err_msg=key)
        for a, b in zip(static.net.get_weights(), traced.net.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=kind)
    assert smooth_relu6  # the smooth clip is what ran
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(static.net.get_weights(), searcher("x").net.get_weights())
    ]
    assert any(moved)  # the steps did change the weights compared
    with pytest.raises(ValueError, match="unknown step 'eval'"):
        bench.static_step(static, "eval", sample)


@pytest.mark.slow
def test_static_draw_variant_times_both_forms_of_each_step_on_one_draw(duo):
    """--variants=static_draw: the static and the switched form of each step are
    timed on the same fixed draw (equal multiply-adds), and the table prints
    both forms' rows."""
    calls = []

    def timer(run, warmup, runs):
        for _ in range(warmup + runs):
            run()
        calls.append((warmup, runs))
        return [0.5] * runs

    figures = bench.bench_space(
        duo["file"], 4, warmup=1, runs=2, table=duo["table"], timer=timer, variant="static_draw"
    )
    assert calls == [(1, 2)] * 4 + [(1, 2)]  # four steps, then the all-ops forward
    for kind in ("weight", "arch"):
        assert figures[f"{kind}_step_switched_s"] == figures[f"{kind}_step_s"] == 0.5
        assert figures[f"{kind}_step_mult_adds"] == figures[f"{kind}_step_switched_mult_adds"]
    # Every two-op draw of DUO_SPACE is both ops of every layer (layered counting).
    assert figures["arch_step_mult_adds"] == 124_992
    rows = bench.format_table([figures], 1e9).splitlines()
    assert [r.split(" | ")[3] for r in rows[2:7]] == [
        "weight_step",
        "arch_step",
        "forward_all",
        "weight_step_switched",
        "arch_step_switched",
    ]
