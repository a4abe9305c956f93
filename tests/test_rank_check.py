"""The rank check: its statistics, the nets it draws, and a small run end to end."""

import itertools
import json

import numpy as np
import pytest
from helpers import made_up_table, micro_space, short_search_config, write_space

from densenas_tf.experiments import rank_check
from densenas_tf.space import budget
from densenas_tf.space.spaces import SearchSpace


def test_kendall_tau_counts_concordant_minus_discordant_pairs():
    a = [1, 2, 3, 4, 5]
    assert rank_check.kendall_tau(a, a) == 1.0
    assert rank_check.kendall_tau(a, a[::-1]) == -1.0
    # One swapped neighbour pair: 9 concordant, 1 discordant of 10.
    assert rank_check.kendall_tau(a, [1, 2, 3, 5, 4]) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=9), rng.normal(size=9)
    by_hand = (
        sum(
            np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            for i, j in itertools.combinations(range(9), 2)
        )
        / 36
    )
    assert rank_check.kendall_tau(x, y) == pytest.approx(by_hand)
    # Ties (tau-b): tied pairs count in neither direction and shrink the denominator.
    assert rank_check.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(2 * 3))
    assert np.isnan(rank_check.kendall_tau([1, 1, 1], [1, 2, 3]))


def test_the_bootstrap_interval_holds_the_statistic_and_narrows_with_more_pairs():
    rng = np.random.default_rng(1)
    widths = []
    for n in (10, 80):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        low, high = rank_check.bootstrap_interval(x, y, rank_check.kendall_tau, 500, seed=0)
        assert low <= rank_check.kendall_tau(x, y) <= high
        widths.append(high - low)
    assert widths[1] < widths[0]


MICRO = micro_space(
    "rankmicro",
    widths=[8, 12, 16, 24, 32],
    feature_map_sizes=[28, 14, 14, 7, 7],
    stages=[0, 1, 1, 2, 3],
    stacking_layers=[0, 1, 1, 1, 0],
)


def _costs(space):
    return budget.LatencyCosts(
        head_ms=np.tile(np.linspace(0.01, 0.05, len(space.head_ops)), (len(space.head_edges), 1)),
        stack_ms=np.tile(
            np.linspace(0.02, 0.0, len(space.stacking_ops)), (len(space.stacking_layers), 1)
        ),
        final_ms=np.full(len(space.final_edges), 0.01),
        fixed_ms=0.05,
    )


def test_the_drawn_nets_fall_one_in_each_slice_of_the_range():
    space = SearchSpace.from_config(MICRO)
    costs = _costs(space)
    nets = rank_check.sample_nets(space, costs, 5, 0.1, 0.2, seed=3)
    edges = np.linspace(0.1, 0.2, 6)
    for k, net in enumerate(nets):
        assert edges[k] <= net.latency_ms < edges[k + 1]
        assert net.latency_ms == pytest.approx(
            costs.arch_ms(space, net.path, net.head_choice, net.stack_choice)
        )
    assert nets == rank_check.sample_nets(space, costs, 5, 0.1, 0.2, seed=3)
    with pytest.raises(budget.BudgetError, match="no net of space 'rankmicro' was drawn"):
        rank_check.sample_nets(space, costs, 3, 5.0, 6.0, seed=0, tries=500)


def test_the_fine_tuned_score_trains_the_path_alone_and_puts_the_weights_back():
    """At learning rate 0 the fine-tuned score is the path-alone score; at a real
    rate it moves; either way every supernet variable ends as it began."""
    import tensorflow as tf

    from densenas_tf.nn.supernet import SuperNet

    space = SearchSpace.from_config(MICRO)
    net = SuperNet.from_space(space, arch_init_seed=0)
    net(tf.zeros((1, *space.input_shape)), mode="all", training=False)
    rng = np.random.default_rng(0)
    split = (
        rng.integers(0, 256, size=(96, *space.input_shape), dtype=np.uint8),
        rng.integers(0, space.num_classes, size=96).astype(np.int32),
    )
    choices = rank_check.sample_nets(space, _costs(space), 2, 0.1, 0.2, seed=3)
    alone = rank_check.score_nets(net, choices, split, 32, lambda line: None)
    before = [v.numpy() for v in net.variables]  # scoring moves the moving BN statistics
    still = rank_check.RankPlan(
        finetune_steps=2, finetune_lr=0.0, score_batch=32, finetune_batch=32
    )
    frozen = rank_check.finetune_scores(net, choices, split, split, still, lambda line: None)
    assert [s["accuracy"] for s in frozen] == [s["accuracy"] for s in alone]
    assert [s["cross_entropy"] for s in frozen] == pytest.approx(
        [s["cross_entropy"] for s in alone], rel=1e-5
    )
    moving = rank_check.RankPlan(
        finetune_steps=4, finetune_lr=0.5, score_batch=32, finetune_batch=32
    )
    tuned = rank_check.finetune_scores(net, choices, split, split, moving, lambda line: None)
    assert all(s["steps"] == 4 for s in tuned)  # more than one pass of 3 batches
    assert [s["cross_entropy"] for s in tuned] != pytest.approx(
        [s["cross_entropy"] for s in alone], rel=1e-3
    )
    for v, value in zip(net.variables, before):
        np.testing.assert_array_equal(v.numpy(), value)


@pytest.mark.slow
def test_a_small_rank_check_runs_end_to_end_and_resumes(tmp_path):
    """On a micro search against a made-up table: every net is scored on the
    supernet and trained with two seeds, the figures in the report are those
    of the files, and a second run trains nothing again."""
    from densenas_tf.search.run import run_search

    space = SearchSpace.from_config(MICRO)
    table_file = tmp_path / "table.json"
    made_up_table(space, lambda k, key: 0.01 + 0.001 * (k % 17)).save(table_file)
    config = short_search_config(write_space(tmp_path, MICRO), table_file, 320, 0.2)
    run_search(config, tmp_path / "search", log=lambda line: None)
    plan = rank_check.RankPlan(
        num_nets=3, train_epochs=1, train_limit=128, test_limit=200, train_seeds=(0, 1),
        score_batch=32, bootstrap=200, finetune_steps=3, finetune_batch=32,
    )  # fmt: skip
    out = tmp_path / "rank"
    result = rank_check.run_rank_check(tmp_path / "search", out, plan, log=lambda line: None)
    nets = result["nets"]
    assert len(nets) == 4 and nets[0]["name"] == "searched"
    searched = json.loads((tmp_path / "search" / "arch.json").read_text())
    assert nets[0]["arch"] == rank_check.ArchSpec.from_dict(searched).to_block_string()
    low, high = result["range_ms"]
    assert all(low <= n["predicted_ms"] <= high for n in nets[1:])
    scores = json.loads((out / "scores.json").read_text())
    assert [n["supernet_accuracy"] for n in nets] == [s["accuracy"] for s in scores]
    assert all(s["images"] == 64 for s in scores)  # the architecture split: 20 % of 320
    tuned = json.loads((out / "scores_finetuned_3_lr0.01.json").read_text())
    assert [n["finetuned_accuracy"] for n in nets] == [s["accuracy"] for s in tuned]
    assert all(s["steps"] == 3 and s["images"] == 64 for s in tuned)
    assert result["finetune"] == {"steps": 3, "lr": 0.01}
    for n in nets:
        for seed, accuracy in zip((0, 1), n["standalone_accuracy"]):
            metrics = json.loads((out / n["name"] / f"seed_{seed}" / "metrics.json").read_text())
            assert accuracy == metrics["test_accuracy"]
    supernet = [n["supernet_accuracy"] for n in nets]
    mean = [n["standalone_mean"] for n in nets]
    tau = result["supernet_vs_standalone"]["kendall_tau"]
    assert np.allclose(tau, rank_check.kendall_tau(supernet, mean), equal_nan=True)
    assert (out / "rank_check.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "rank_check.md").read_text()
    assert "supernet vs stand-alone" in text and "stand-alone seed vs seed" in text
    assert "supernet fine-tuned vs stand-alone" in text

    before = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    again = rank_check.run_rank_check(tmp_path / "search", out, plan, log=lambda line: None)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")} == before
    assert again["nets"] == nets
