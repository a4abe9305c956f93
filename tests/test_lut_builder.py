"""The table builder (really measuring, on a reduced tiny space) and the report tool."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from densenas_tf.latency import LatencyTable, LatencyTableError, new_provenance, space_keys
from densenas_tf.latency_measure import build_table
from densenas_tf.search_space import SearchSpace, load_space

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_space():
    config = load_space("tiny").to_config()
    config["name"] = "tiny_two_ops"
    config["head_ops"] = ["mbconv_k3_e3", "mbconv_k5_e6"]
    config["stacking_ops"] = ["mbconv_k3_e3", "skip"]
    return SearchSpace.from_config(config)


def test_builder_completes_then_resumes_without_measuring(small_space, tmp_path):
    out = tmp_path / "lut.json"
    lines = []
    table, measured = build_table(small_space, out, warmup=2, runs=5, log=lines.append)
    needed = len(space_keys(small_space).all_keys())
    assert measured == needed
    LatencyTable.load(out).check_space(small_space)  # complete
    assert table.overhead_ms > 0
    assert any(line.startswith(f"[{needed}/{needed}]") for line in lines)
    first = LatencyTable.load(out).entries

    table, measured = build_table(small_space, out, warmup=2, runs=5, log=lines.append)
    assert measured == 0
    assert LatencyTable.load(out).entries == first

    # An interrupted build: entries missing from the file are measured, nothing else.
    partial = LatencyTable.load(out)
    dropped = sorted(partial.entries)[:3]
    for key in dropped:
        del partial.entries[key]
    partial.save(out)
    table, measured = build_table(small_space, out, warmup=2, runs=5, log=lines.append)
    assert measured == 3
    assert set(table.entries) == set(first)
    assert all(table.entries[k] == first[k] for k in first if k not in dropped)


def test_builder_refuses_a_file_with_other_settings(small_space, tmp_path):
    out = tmp_path / "lut.json"
    LatencyTable(new_provenance(small_space, "tflite", 1, 1, "here", {})).save(out)
    with pytest.raises(LatencyTableError, match="threads: file has 1, asked 2"):
        build_table(small_space, out, threads=2, warmup=1, runs=3, log=lambda line: None)
    with pytest.raises(LatencyTableError, match="space: file has 'tiny_two_ops', asked 'tiny'"):
        build_table(load_space("tiny"), out, warmup=1, runs=3, log=lambda line: None)


def test_lut_report_json():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "lut_report.py"),
            "--space=fashion_mnist",
            "--num_random=3",
            "--warmup=2",
            "--runs=10",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["n_paths"] == 3
    assert 0 <= report["mape_percent"] < 100
    assert -1 <= report["spearman"] <= 1
    assert all(row["measured_ms"] > 0 and row["predicted_ms"] > 0 for row in report["rows"])
