"""The comparison pipeline end to end in its reduced mode: every net in the table
has its ArchSpec, a test accuracy and a measured latency, and the files agree."""

import json
from pathlib import Path

import numpy as np
import pytest

from densenas_tf.arch_spec import ArchSpec, count_costs
from densenas_tf.compare import (
    REDUCED,
    format_results,
    mobilenet_v2_fashion,
    outcome,
    run_compare,
    summarise,
)
from densenas_tf.models import build_model


def test_mobilenet_v2_fashion_widths_scale():
    small, full = mobilenet_v2_fashion(0.5), mobilenet_v2_fashion(1.0)
    assert [b.width for b in full.blocks] == [16, 24, 32, 48, 72]
    assert [b.width for b in small.blocks] == [8, 12, 16, 24, 36]
    assert count_costs(small).mult_adds < count_costs(full).mult_adds
    assert build_model(full).output_shape == (None, 10)


def test_reduced_comparison(tmp_path):
    results = run_compare(tmp_path / "compare", REDUCED, log=lambda line: None)
    rows = results["rows"]
    families = sorted({r["family"] for r in rows})
    assert families == ["DenseNAS", "MobileNetV2", "fixed-block", "random search"]
    assert len(rows) == len(REDUCED.lams) + 1 + len(REDUCED.mbv2_widths) + 1
    for row in rows:
        spec = ArchSpec.from_json(Path(row["arch_file"]).read_text())
        assert spec.to_block_string() == row["arch"]
        assert count_costs(spec).mult_adds == row["mult_adds"]
        assert row["seed"] == 0
        if row["family"] != "MobileNetV2":
            assert row["predicted_ms"] > 0
    random_row = next(r for r in rows if r["family"] == "random search")
    low, high = random_row["latency_range_ms"]
    assert low - 1e-9 <= random_row["predicted_ms"] <= high + 1e-9
    assert 1 <= random_row["trials"] <= REDUCED.random_max_trials
    out = tmp_path / "compare"
    assert json.loads((out / "results.json").read_text())["rows"] == rows
    assert (out / "compare.md").read_text().strip() == format_results(results)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_binary_refuses_bad_schedule_flags(tmp_path):
    import subprocess
    import sys

    tool = Path(__file__).resolve().parents[1] / "tools" / "compare.py"
    for flag, name in (
        ("--train_epochs=0", "--train_epochs"),
        ("--random_max_trials=0", "--random_max_trials"),
    ):
        done = subprocess.run(
            [sys.executable, str(tool), f"--run_dir={tmp_path / 'run'}", flag],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode != 0
        assert f"{name} must be at least 1" in done.stderr
        assert not (tmp_path / "run").exists()  # refused before anything was written


def test_seeds_are_summarised_with_standard_errors_and_a_verdict():
    def row(net, family, seed, acc, ms):
        return {"net": net, "family": family, "seed": seed, "test_accuracy": acc, "tflite_ms": ms}

    rows = [row("dense", "DenseNAS", s, a, 0.30) for s, a in enumerate([0.90, 0.91, 0.92])]
    rows += [row("rand", "random search", s, a, 0.31) for s, a in enumerate([0.85, 0.86, 0.87])]
    rows += [row("mb_a", "MobileNetV2", s, a, 0.29) for s, a in enumerate([0.89, 0.92, 0.92])]
    rows += [row("mb_b", "MobileNetV2", s, 0.99, 0.90) for s in range(3)]  # far in latency
    summary = {s["net"]: s for s in summarise(rows)}
    assert summary["dense"]["seeds"] == [0, 1, 2]
    assert summary["dense"]["test_accuracy_mean"] == pytest.approx(0.91)
    assert summary["dense"]["test_accuracy_se"] == pytest.approx(0.01 / np.sqrt(3))
    lines = outcome(list(summary.values()))
    # 5 points ahead of random search, standard error of the difference 0.82:
    assert "dense (0.300 ms) vs rand (0.310 ms): accuracy +5.00 points" in lines[0]
    assert lines[0].endswith("beats it by more than two standard errors")
    # Against the MobileNetV2 width nearest in latency (mb_a, not the better mb_b): a tie.
    assert "vs mb_a" in lines[1] and lines[1].endswith("no difference shown")
    one_seed = outcome(summarise([r for r in rows if r["seed"] == 0]))
    assert all(line.endswith("no verdict") for line in one_seed)
