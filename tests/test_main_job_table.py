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
