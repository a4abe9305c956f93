"""Which float latency table the main job's search uses: the shipped one when
it names this kind of machine and passes the check against whole nets timed
here, else one measured here (the check and the measurement replaced by fakes
that record their calls)."""

import json

import pytest

from densenas_tf import main_job
from densenas_tf.latency.table import LatencyTableError, default_table_path
from densenas_tf.space.spaces import load_space


@pytest.fixture
def space():
    return load_space("fashion_mnist")


@pytest.fixture
def built(monkeypatch):
    calls = []

    def fake_build(space, path, log):
        calls.append(path)
        path.write_text("{}")

    monkeypatch.setattr(main_job, "build_table", fake_build)
    return calls


def test_the_shipped_table_is_used_when_it_passes_its_check_here(
    space, built, tmp_path, monkeypatch
):
    checked = []

    def passing(space_, table, path, log):
        checked.append(path)
        return {"checked": True, "device": "here", "nets": 5, "mape_percent": 3.25}

    monkeypatch.setattr(main_job, "check_table_here", passing)
    choice = main_job._table_for_this_machine(space, tmp_path, log=lambda line: None)
    shipped = str(default_table_path("fashion_mnist"))
    assert checked == [shipped] and built == []
    assert choice == {
        "path": shipped,
        "how": "shipped, checked here: 3.2 % mean error over 5 whole nets",
    }
    assert json.loads((tmp_path / "shipped_table_check.json").read_text())["mape_percent"] == 3.25


def test_a_table_is_measured_here_when_the_shipped_one_fails_its_check(
    space, built, tmp_path, monkeypatch
):
    def failing(space_, table, path, log):
        raise LatencyTableError("24.0 % mean error")

    lines = []
    monkeypatch.setattr(main_job, "check_table_here", failing)
    choice = main_job._table_for_this_machine(space, tmp_path, log=lines.append)
    measured = tmp_path / default_table_path("fashion_mnist").name
    assert built == [measured]
    assert choice == {"path": str(measured), "how": "measured here by this job"}
    assert any("failed its check here: 24.0 % mean error" in line for line in lines), lines


def test_a_table_is_measured_here_when_the_shipped_one_is_another_machines(
    space, built, tmp_path, monkeypatch
):
    def other_device(space_, table, path, log):
        return {"checked": False, "device": "Pixel 7", "this_machine": "here"}

    lines = []
    monkeypatch.setattr(main_job, "check_table_here", other_device)
    choice = main_job._table_for_this_machine(space, tmp_path, log=lines.append)
    assert choice["how"] == "measured here by this job" and len(built) == 1
    assert any("measured on 'Pixel 7', not here" in line for line in lines), lines


def _timed(ratios, mape_percent):
    """A failed check's record: nets predicted 0.2, 0.3, ... ms, measured at
    ``ratios`` times that."""
    rows = [
        {"name": f"random_{i}", "predicted_ms": 0.1 * (i + 2), "measured_ms": 0.1 * (i + 2) * r}
        for i, r in enumerate(ratios)
    ]
    return {
        "checked": True,
        "device": "here",
        "nets": len(rows),
        "mape_percent": mape_percent,
        "rows": rows,
    }


def test_a_shipped_table_off_by_one_factor_is_scaled_not_measured_again(
    space, built, tmp_path, monkeypatch
):
    from densenas_tf.latency.table import LatencyTable

    ratios = [1.40, 1.45, 1.47, 1.50, 1.52]  # this machine 1.47x slower, each net within 5 %

    def failing(space_, table, path, log):
        err = LatencyTableError("47.0 % mean error")
        err.check = _timed(ratios, 47.0)
        raise err

    lines = []
    monkeypatch.setattr(main_job, "check_table_here", failing)
    choice = main_job._table_for_this_machine(space, tmp_path, log=lines.append)
    assert built == []
    shipped = LatencyTable.load(default_table_path("fashion_mnist"))
    scaled_path = tmp_path / "fashion_mnist_tflite_t1_b1_scaled.json"
    assert choice["path"] == str(scaled_path)
    assert choice["how"].startswith("shipped, scaled x1.470 to this machine: 47.0 % mean error")
    assert choice["factor"] == pytest.approx(1.47)
    # The shipped int8 table's prediction is scaled alike; unscaled choices leave it.
    name, predicted = main_job._scaled_like_float("int8.json", 0.3, choice)
    assert (
        predicted == pytest.approx(0.3 * 1.47)
        and name == "int8.json (scaled x1.470 as the float table)"
    )
    assert main_job._scaled_like_float("int8.json", 0.3, {"how": "given"}) == ("int8.json", 0.3)
    assert main_job._scaled_like_float(None, None, choice) == (None, None)
    scaled = LatencyTable.load(scaled_path)
    assert scaled.provenance["scaled"]["factor"] == pytest.approx(1.47)
    assert scaled.provenance["scaled"]["from"] == str(default_table_path("fashion_mnist"))
    assert set(scaled.entries) == set(shipped.entries)
    for key, entry in shipped.entries.items():
        assert scaled.entries[key].median_ms == pytest.approx(1.47 * entry.median_ms, rel=1e-12)
        assert scaled.entries[key].count == entry.count
    assert scaled.overhead_ms == pytest.approx(1.47 * shipped.overhead_ms, rel=1e-12)
    # What was timed is kept beside it.
    kept = json.loads((tmp_path / "shipped_table_check.json").read_text())
    assert [r["measured_ms"] for r in kept["rows"]] == [
        r["measured_ms"] for r in _timed(ratios, 47.0)["rows"]
    ]


def test_a_shipped_table_off_by_different_factors_is_measured_again(
    space, built, tmp_path, monkeypatch
):
    def failing(space_, table, path, log):
        err = LatencyTableError("50.0 % mean error")
        err.check = _timed([1.0, 1.2, 1.5, 1.9, 2.4], 50.0)  # scaled by 1.5: 18 % off
        raise err

    monkeypatch.setattr(main_job, "check_table_here", failing)
    choice = main_job._table_for_this_machine(space, tmp_path, log=lambda line: None)
    assert choice["how"] == "measured here by this job" and len(built) == 1
    assert not (tmp_path / "fashion_mnist_tflite_t1_b1_scaled.json").exists()


def test_scaling_a_table_fits_one_factor_and_checks_it_again(space):
    import numpy as np

    from densenas_tf.latency.check import scaled_to_this_machine
    from densenas_tf.latency.report import random_arch
    from densenas_tf.latency.table import LatencyTable

    table = LatencyTable.load(default_table_path("fashion_mnist"))
    scaled, fit = scaled_to_this_machine(table, _timed([0.5, 0.5, 0.5], 50.0))
    assert fit["factor"] == pytest.approx(0.5) and fit["mape_percent_after"] == pytest.approx(0)
    # Every net's prediction scales by the factor, the per-invocation overhead with it.
    rng = np.random.default_rng(0)
    for i in range(5):
        spec = random_arch(space, rng, f"net_{i}")
        assert scaled.predicted_ms(spec) == pytest.approx(0.5 * table.predicted_ms(spec), rel=1e-9)
    # 3 nets at 1.0, 1.1 and 1.3 x the table: the median factor 1.1 leaves them
    # 10 %, 0 % and 15.4 % off, 8.5 % on average: kept under 10 %, refused under 5 %.
    timed = _timed([1.0, 1.1, 1.3], 13.3)
    kept = scaled_to_this_machine(table, timed)
    assert kept is not None
    assert kept[1]["factor"] == pytest.approx(1.1)
    assert kept[1]["mape_percent_after"] == pytest.approx(100 * (0.1 + 0 + 0.2 / 1.3) / 3)
    assert scaled_to_this_machine(table, timed, max_mape=5.0) is None
    assert scaled_to_this_machine(table, {"mape_percent": 50.0, "rows": []}) is None


def _near_budget(space, tmp_path, monkeypatch, check, choice=None):
    """Runs the near-budget stage with ``check`` in place of the timing; returns
    (the choice, the nets the check was given)."""
    given = []

    def fake_check(space_, table, path, log, nets):
        given.append(nets)
        return check(nets)

    monkeypatch.setattr(main_job, "check_table_here", fake_check)
    choice = choice or {
        "path": str(default_table_path("fashion_mnist")),
        "how": "shipped, checked here: 3.2 % mean error over 5 whole nets",
    }
    got = main_job._near_budget_table(space, choice, 0.30, tmp_path, log=lambda line: None)
    return got, given[0]


def test_nets_near_the_budget_check_the_table_where_the_derived_net_will_be(
    space, built, tmp_path, monkeypatch
):
    from densenas_tf.latency.table import LatencyTable

    shipped = LatencyTable.load(default_table_path("fashion_mnist"))

    def passing(nets):
        return {"checked": True, "device": "here", "nets": len(nets), "mape_percent": 4.0}

    choice, nets = _near_budget(space, tmp_path, monkeypatch, passing)
    assert len(nets) == main_job.NEAR_BUDGET_NETS and built == []
    predicted = sorted(shipped.predicted_ms(n) for n in nets)
    assert 0.8 * 0.30 <= predicted[0] and predicted[-1] <= 0.30
    assert predicted[-1] - predicted[0] > 0.03  # spread over the band, not piled up
    assert choice["path"] == str(default_table_path("fashion_mnist"))
    assert choice["how"].endswith(
        "near the budget: 4.0 % mean error over 5 nets in [0.8, 1] x the budget"
    )


def test_a_table_off_near_the_budget_by_one_factor_is_scaled_again(
    space, built, tmp_path, monkeypatch
):
    from densenas_tf.latency.table import LatencyTable

    def failing(nets):
        err = LatencyTableError("18.0 % mean error")
        err.check = _timed([0.80, 0.81, 0.82, 0.83, 0.84], 18.0)
        raise err

    first = {
        "path": str(default_table_path("fashion_mnist")),
        "how": "shipped, scaled x0.600",
        "factor": 0.6,
    }
    choice, _ = _near_budget(space, tmp_path, monkeypatch, failing, first)
    path = tmp_path / "fashion_mnist_tflite_t1_b1_near_budget.json"
    assert built == [] and choice["path"] == str(path)
    assert choice["factor"] == pytest.approx(0.6 * 0.82)  # the whole scale from the shipped table
    assert choice["how"].startswith("shipped, scaled x0.600; near the budget scaled x0.820 more")
    shipped = LatencyTable.load(default_table_path("fashion_mnist"))
    key = next(iter(shipped.entries))
    assert LatencyTable.load(path).entries[key].median_ms == pytest.approx(
        0.82 * shipped.entries[key].median_ms
    )
    assert (tmp_path / "near_budget_check.json").is_file()


def test_a_table_off_near_the_budget_by_different_factors_is_measured_here(
    space, built, tmp_path, monkeypatch
):
    def failing(nets):
        err = LatencyTableError("40.0 % mean error")
        err.check = _timed([0.6, 0.8, 1.0, 1.3, 1.7], 40.0)
        raise err

    choice, _ = _near_budget(space, tmp_path, monkeypatch, failing)
    assert built == [tmp_path / default_table_path("fashion_mnist").name]
    assert choice["how"].startswith("measured here by this job")
