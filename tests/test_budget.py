"""Derivation under a latency budget: exact against brute force, and what it refuses."""

import itertools
import json

import numpy as np
import pytest

from densenas_tf.space import budget, derive
from densenas_tf.space.spaces import SPACES_DIR, SearchSpace, load_space, read_config_file


def small_space(stacking=(0, 1, 2, 1, 1, 0), head_ops=2, stacking_ops=3) -> SearchSpace:
    """tiny with fewer ops, so that every architecture can be enumerated."""
    config = read_config_file(SPACES_DIR / "tiny.yaml")
    config["name"] = "tiny_small"
    config["blocks"]["stacking_layers"] = list(stacking)
    config["head_ops"] = config["head_ops"][:head_ops]
    config["stacking_ops"] = [*config["stacking_ops"][: stacking_ops - 1], "skip"]
    return SearchSpace.from_config(config)


def random_problem(space: SearchSpace, seed: int, spread: float = 2.0):
    rng = np.random.default_rng(seed)
    stack_ms = rng.uniform(0.01, 0.1, (len(space.stacking_layers), len(space.stacking_ops)))
    stack_ms[:, space.stacking_ops.index("skip")] = 0.0
    costs = budget.LatencyCosts(
        head_ms=rng.uniform(0.01, 0.1, (len(space.head_edges), len(space.head_ops))),
        stack_ms=stack_ms,
        final_ms=rng.uniform(0.01, 0.05, len(space.final_edges)),
        fixed_ms=0.05,
    )
    alphas = dict(
        alpha_head=rng.normal(0, spread, (len(space.head_edges), len(space.head_ops))),
        alpha_stack=rng.normal(0, spread, (len(space.stacking_layers), len(space.stacking_ops))),
        beta=rng.normal(0, spread, len(space.edges)),
    )
    return costs, alphas


def brute_force(space, costs, alpha_head, alpha_stack, beta):
    """(latency, log-probability, path, head choice, stack choice) of every architecture."""
    probs = derive.path_probabilities(space, beta)
    logp_head, logp_stack = budget.log_softmax(alpha_head), budget.log_softmax(alpha_stack)
    out = []
    for path in space.enumerate_paths():
        head_rows, stack_rows = [], []
        for src, dst in itertools.pairwise(path):
            if dst != space.final_node:
                head_rows.append(space.head_row(space.edge(src, dst)))
                stack_rows.extend(space.stacking_rows(dst))
        path_logp = float(np.log(derive.path_probability(space, probs, path)))
        for heads in itertools.product(range(len(space.head_ops)), repeat=len(head_rows)):
            for stacks in itertools.product(range(len(space.stacking_ops)), repeat=len(stack_rows)):
                hc, sc = dict(zip(head_rows, heads)), dict(zip(stack_rows, stacks))
                logp = path_logp + sum(logp_head[r, o] for r, o in hc.items())
                logp += sum(logp_stack[r, o] for r, o in sc.items())
                out.append((costs.arch_ms(space, path, hc, sc), logp, path, hc, sc))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quantile", [0.05, 0.3, 0.7, 1.0])
def test_the_budgeted_derivation_is_the_brute_force_optimum(seed, quantile):
    space = small_space()
    costs, alphas = random_problem(space, seed)
    every = brute_force(space, costs, **alphas)
    lats = np.array([a[0] for a in every])
    target = float(np.quantile(lats, quantile))
    fits = [a for a in every if a[0] <= target + budget.TOLERANCE_MS]
    best = max(fits, key=lambda a: a[1])
    spec = budget.derive_within_budget(space, costs, **alphas, budget_ms=target)
    found = spec.provenance["budget"]
    assert found["log_probability"] == pytest.approx(best[1], abs=1e-9)
    assert found["predicted_ms"] <= target + budget.TOLERANCE_MS
    assert found["predicted_ms"] == pytest.approx(best[0], abs=1e-12)
    # The optimum is unique for continuous random numbers: the same architecture.
    ref = derive.arch_from_path(space, best[2], best[3], best[4])
    assert spec.same_architecture(ref)
    assert tuple(spec.provenance["path"]) == best[2]


@pytest.mark.parametrize("seed", range(3))
def test_the_front_is_the_brute_force_front(seed):
    space = small_space(stacking=(0, 2, 1, 1, 2, 0))
    costs, alphas = random_problem(space, seed, spread=0.5)
    every = brute_force(space, costs, **alphas)
    lat = np.array([a[0] for a in every])
    logp = np.array([a[1] for a in every])
    expected = budget.pareto(lat, logp)
    front = budget.pareto_architectures(space, costs, **alphas)
    assert [c.latency_ms for c in front] == pytest.approx(lat[expected].tolist(), abs=1e-12)
    assert [c.log_probability for c in front] == pytest.approx(logp[expected].tolist(), abs=1e-9)
    assert all(a.latency_ms < b.latency_ms for a, b in itertools.pairwise(front))
    assert all(a.log_probability < b.log_probability for a, b in itertools.pairwise(front))
    for choice in front:
        assert costs.arch_ms(
            space, choice.path, choice.head_choice, choice.stack_choice
        ) == pytest.approx(choice.latency_ms, abs=1e-12)


def test_pareto_keeps_the_first_of_equal_entries_and_drops_the_dominated():
    lat = np.array([1.0, 1.0, 2.0, 0.5, 3.0, 2.0])
    logp = np.array([-1.0, -1.0, -2.0, -3.0, 0.0, -0.5])
    assert budget.pareto(lat, logp).tolist() == [3, 0, 5, 4]


def test_no_architecture_fits_names_the_fastest_and_the_least_budget():
    space = small_space()
    costs, alphas = random_problem(space, 0)
    fastest = min(a[0] for a in brute_force(space, costs, **alphas))
    with pytest.raises(budget.BudgetError, match=f"fastest predicts {fastest:.4f} ms") as err:
        budget.derive_within_budget(space, costs, **alphas, budget_ms=fastest * 0.99)
    assert "--target_ms" in str(err.value)
    spec = budget.derive_within_budget(space, costs, **alphas, budget_ms=fastest)
    assert spec.provenance["budget"]["predicted_ms"] == pytest.approx(fastest, abs=1e-12)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "0.3"])
def test_a_budget_that_is_no_positive_number_is_refused(bad):
    space = small_space()
    costs, alphas = random_problem(space, 0)
    with pytest.raises(budget.BudgetError, match="must be a number of ms > 0"):
        budget.derive_within_budget(space, costs, **alphas, budget_ms=bad)


def test_costs_shaped_for_another_space_are_refused():
    space = small_space()
    costs, alphas = random_problem(small_space(stacking=(0, 1, 1, 1, 1, 0)), 0)
    _, alphas = random_problem(space, 0)
    with pytest.raises(ValueError, match="stack_ms has shape"):
        budget.derive_within_budget(space, costs, **alphas, budget_ms=1.0)


def test_a_budget_that_does_not_bind_gives_the_jointly_most_probable_net():
    """With the budget above every net, the result is the most probable path
    with its ops together; when the alphas and beta favour one net clearly it
    is the paper's derivation."""
    space = small_space()
    costs, alphas = random_problem(space, 3)
    paper = derive.derive_arch(space, **alphas)
    spec = budget.derive_within_budget(space, costs, **alphas, budget_ms=1e6)
    best = max(brute_force(space, costs, **alphas), key=lambda a: a[1])
    assert spec.provenance["budget"]["log_probability"] == pytest.approx(best[1])
    assert spec.provenance["budget"]["ops_not_argmax"] == 0
    clear = dict(alphas)
    clear["beta"] = np.zeros_like(alphas["beta"])
    for edge_ids in ([e.index for e in space.out_edges(b.index)] for b in space.blocks):
        clear["beta"][edge_ids[0]] = 10.0  # one path, far ahead
    assert budget.derive_within_budget(space, costs, **clear, budget_ms=1e6).same_architecture(
        derive.derive_arch(space, **clear)
    )
    # The paper's net (Viterbi path, then argmax ops) is never jointly more
    # probable than the budget's unbinding optimum.
    paper_entry = next(
        a for a in brute_force(space, costs, **alphas)
        if derive.arch_from_path(space, a[2], a[3], a[4]).same_architecture(paper)
        and a[2] == tuple(paper.provenance["path"])
    )  # fmt: skip
    assert paper_entry[1] <= spec.provenance["budget"]["log_probability"] + 1e-9


def test_the_budgeted_net_predicts_its_own_latency_on_a_shipped_table():
    """On the fashion_mnist space and its shipped table, the architecture found
    under each budget predicts (``LatencyTable.predicted_ms``) what the programme
    added, within the budget; tighter budgets give faster nets."""
    from densenas_tf.latency.expected import latency_costs
    from densenas_tf.latency.table import LatencyTable, default_table_path

    space = load_space("fashion_mnist")
    table = LatencyTable.load(default_table_path(space.name))
    costs = latency_costs(space, table)
    rng = np.random.default_rng(0)
    alphas = dict(
        alpha_head=rng.normal(0, 1e-3, (len(space.head_edges), len(space.head_ops))),
        alpha_stack=rng.normal(0, 1e-3, (len(space.stacking_layers), len(space.stacking_ops))),
        beta=rng.normal(0, 1e-3, len(space.edges)),
    )
    front = budget.pareto_architectures(space, costs, **alphas)
    low, high = front[0].latency_ms, front[-1].latency_ms
    previous = None
    for target in np.linspace(low, high, 5)[::-1]:
        spec = budget.derive_within_budget(space, costs, **alphas, budget_ms=float(target))
        predicted = table.predicted_ms(spec)
        assert predicted == pytest.approx(spec.provenance["budget"]["predicted_ms"], abs=1e-9)
        assert predicted <= target + 1e-9
        if previous is not None:
            assert predicted <= previous
        previous = predicted


def _in_band(every, low, high):
    return [a for a in every if low - budget.TOLERANCE_MS <= a[0] <= high + budget.TOLERANCE_MS]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.9])
def test_the_band_derivation_against_brute_force(seed, quantile):
    """The most probable architecture within [0.9, 1] x T. With bins finer than
    any two latencies of the space it is the brute-force optimum; with the
    default bins it is in the band, and at least as probable as every
    architecture of the band shrunk by the pruning's reach at each edge."""
    space = small_space()
    costs, alphas = random_problem(space, seed)
    every = brute_force(space, costs, **alphas)
    high = float(np.quantile([a[0] for a in every], quantile))
    low = 0.9 * high
    best = max(_in_band(every, low, high), key=lambda a: a[1])
    fine = budget.most_probable_in_band(
        space, costs, **alphas, low_ms=low, high_ms=high, bins=10**8
    )
    assert fine.log_probability == pytest.approx(best[1], abs=1e-9)
    assert fine.latency_ms == pytest.approx(best[0], abs=1e-12)
    assert fine.path == best[2] and fine.head_choice == best[3] and fine.stack_choice == best[4]
    coarse = budget.most_probable_in_band(space, costs, **alphas, low_ms=low, high_ms=high)
    assert low - budget.TOLERANCE_MS <= coarse.latency_ms <= high + budget.TOLERANCE_MS
    assert coarse.latency_ms == pytest.approx(
        costs.arch_ms(space, coarse.path, coarse.head_choice, coarse.stack_choice), abs=1e-12
    )
    assert coarse.log_probability <= best[1] + 1e-9
    # Each prune moves a kept latency by under one bin; a path meets at most one
    # per stacking layer, two per block (its edge's step and its node) and the end.
    reach = (len(space.stacking_layers) + 2 * len(space.blocks) + 1) * high / budget.BAND_BINS
    shrunk = _in_band(every, low + reach, high - reach)
    if shrunk:
        assert coarse.log_probability >= max(a[1] for a in shrunk) - 1e-9


def test_the_budget_is_used_when_the_most_probable_net_leaves_it_unused():
    space = small_space()
    costs, alphas = random_problem(space, 1)
    every = brute_force(space, costs, **alphas)
    most = max(every, key=lambda a: a[1])  # the jointly most probable net
    target = most[0] / 0.7  # it uses 70 % of this budget
    plain = budget.derive_within_budget(space, costs, **alphas, budget_ms=target)
    assert plain.provenance["budget"]["predicted_ms"] == pytest.approx(most[0])
    assert "band" not in plain.provenance["budget"]
    used = budget.derive_within_budget(
        space, costs, **alphas, budget_ms=target, min_fraction=0.9
    ).provenance["budget"]
    best = max(_in_band(every, 0.9 * target, target), key=lambda a: a[1])
    assert 0.9 * target <= used["predicted_ms"] <= target
    assert used["log_probability"] <= best[1] + 1e-9
    assert used["log_probability"] < most[1]  # the band costs probability, and says so
    assert used["band"] == {
        "low_ms": pytest.approx(0.9 * target),
        "met": True,
        "most_probable_within_budget_ms": pytest.approx(most[0]),
        "most_probable_within_budget_log_probability": pytest.approx(most[1]),
    }
    assert used["min_fraction"] == 0.9
    # A net already in the band is kept as it is.
    near = budget.derive_within_budget(
        space, costs, **alphas, budget_ms=most[0] / 0.95, min_fraction=0.9
    )
    assert near.same_architecture(plain) and "band" not in near.provenance["budget"]
    # Above the slowest net, the band's low edge is 0.9 x that net's latency.
    slowest = max(a[0] for a in every)
    assert budget.slowest_ms(space, costs) == pytest.approx(slowest, abs=1e-12)
    above = budget.derive_within_budget(
        space, costs, **alphas, budget_ms=2 * slowest, min_fraction=0.9
    ).provenance["budget"]
    assert above["band"]["low_ms"] == pytest.approx(0.9 * slowest)
    assert above["band"]["met"] is True
    assert 0.9 * slowest <= above["predicted_ms"] <= slowest + 1e-12
    # However far above: the same net, and as probable as every net of the band
    # shrunk by the pruning's reach (bins over the slowest net, not the budget).
    reach = (len(space.stacking_layers) + 2 * len(space.blocks) + 1) * slowest / budget.BAND_BINS
    shrunk = _in_band(every, 0.9 * slowest + reach, slowest - reach)
    assert above["log_probability"] >= max(a[1] for a in shrunk) - 1e-9
    far = budget.derive_within_budget(
        space, costs, **alphas, budget_ms=100 * slowest, min_fraction=0.9
    ).provenance["budget"]
    assert far["band"]["met"] is True
    assert (far["predicted_ms"], far["log_probability"]) == (
        above["predicted_ms"],
        above["log_probability"],
    )
    # A band no net falls in: the most probable within the budget stays. Head
    # ops of 0.01 or 1 ms, nothing else but 0.05 ms fixed: nets take under
    # 0.2 ms or over 1 ms, none within [0.45, 0.5] ms.
    gapped = budget.LatencyCosts(
        head_ms=np.tile([0.01, 1.0], (len(space.head_edges), 1)),
        stack_ms=np.zeros_like(costs.stack_ms),
        final_ms=np.zeros_like(costs.final_ms),
        fixed_ms=0.05,
    )
    every = brute_force(space, gapped, **alphas)
    assert not _in_band(every, 0.45, 0.5)
    empty = budget.derive_within_budget(
        space, gapped, **alphas, budget_ms=0.5, min_fraction=0.9
    ).provenance["budget"]
    assert empty["band"]["met"] is False
    fits = max((a for a in every if a[0] <= 0.5), key=lambda a: a[1])
    assert empty["predicted_ms"] == pytest.approx(fits[0])
    assert empty["log_probability"] == pytest.approx(fits[1])


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.9", True, float("nan")])
def test_a_min_fraction_outside_0_1_is_refused(bad):
    space = small_space()
    costs, alphas = random_problem(space, 0)
    with pytest.raises(budget.BudgetError, match="min_fraction must be a number in"):
        budget.derive_within_budget(space, costs, **alphas, budget_ms=1.0, min_fraction=bad)
    from densenas_tf.search.objectives import Objective

    with pytest.raises(ValueError, match="min_fraction must be in"):
        Objective(kind="budget", target_ms=0.3, min_fraction=bad)


def test_a_run_re_derives_with_the_band_it_derived_with(tmp_path):
    """The band's lower edge of a finished run: its objective's, else the one
    its derivation recorded in summary.json (runs searched under an older
    default), else today's default."""
    from densenas_tf.search.objectives import Objective
    from densenas_tf.search.run import run_min_fraction

    assert run_min_fraction(tmp_path, {"kind": "budget"}) == Objective.min_fraction == 0.95
    (tmp_path / "summary.json").write_text(json.dumps({"budget": {"min_fraction": 0.9}}))
    assert run_min_fraction(tmp_path, {"kind": "budget"}) == 0.9
    assert run_min_fraction(tmp_path, {"kind": "budget", "min_fraction": 0.5}) == 0.5
    (tmp_path / "summary.json").write_text(json.dumps({"budget": None}))
    assert run_min_fraction(tmp_path, {"kind": "budget"}) == 0.95
