"""The step benchmark: its figures are consistent (not timed: speed is measured
by running tools/bench_step.py, never asserted in tests)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from densenas_tf.describe import supernet_mult_adds, uniform_sampled_mult_adds
from densenas_tf.search_space import load_space

ROOT = Path(__file__).resolve().parent.parent


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


def test_bench_binary_on_a_small_batch(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench_step.py"),
            "--presets=fashion_mnist:2",
            "--warmup=1",
            "--runs=2",
            f"--json_out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())["presets"]["fashion_mnist:2"]
    for step in ("weight_step", "arch_step", "forward_all"):
        assert figures[f"{step}_images_per_s"] == np.float64(2 / figures[f"{step}_s"])
        assert figures[f"{step}_mult_adds_per_s"] > 0
        assert f"| fashion_mnist | 2 | default | {step} |" in result.stdout
    assert figures["peak_rss_mb"] > 100
    space = load_space("fashion_mnist")
    assert figures["space"] == space.name


def test_warmup_ablation_binary_evaluates_each_variant_and_caches_it(tmp_path):
    out, cache = tmp_path / "ablation.json", tmp_path / "cache"
    command = [
        sys.executable,
        str(ROOT / "tools" / "bench_warmup.py"),
        "--config=fashion_mnist_quick",
        '--variants=plain:weight_sharing="none",data.train_limit=640,batch_size=32;'
        'nested:weight_sharing="nested",data.train_limit=640,batch_size=32',
        "--eval_steps=1,3",
        f"--json_out={out}",
        f"--cache_dir={cache}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
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
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stderr.count("cached in") == 2
    assert json.loads(out.read_text()) == payload
