"""The table builder (really measuring, on a reduced tiny space) and the report tool."""

import errno
import json
import math
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, python_env, run_tool, table_prediction_ms

from densenas_tf.latency import report as lut_report
from densenas_tf.latency.measure import build_table
from densenas_tf.latency.report import ReportOutputError, check_writable, mape_percent, spearman
from densenas_tf.latency.table import (
    LatencyTable,
    LatencyTableError,
    default_table_path,
    new_provenance,
    space_keys,
)
from densenas_tf.space.spaces import SearchSpace, load_space


def run_hint(command, timeout=600):
    """Runs a command line given by an error message, as a user would, with this Python."""
    assert "densenas-build-lut " in command, command
    command = command.replace("densenas-build-lut ", f"{sys.executable} tools/build_lut.py ")
    return subprocess.run(
        command,
        shell=True,
        cwd=ROOT,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_message(stderr):
    """What a binary printed after ``error: `` (the runtime's own log lines come before)."""
    match = re.search(r"(?m)^error: ", stderr)
    assert match, stderr[-2000:]
    return stderr[match.end() :].strip()


def measured_now(stdout):
    """(entries in the table, entries measured by this run) from build_lut.py's summary line."""
    match = re.search(r": (\d+) entries \((\d+) measured now\), overhead ", stdout)
    assert match, stdout
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def small_space():
    config = load_space("tiny").to_config()
    config["name"] = "tiny_two_ops"
    config["head_ops"] = ["mbconv_k3_e3", "mbconv_k5_e6"]
    config["stacking_ops"] = ["mbconv_k3_e3", "skip"]
    return SearchSpace.from_config(config)


@pytest.mark.slow
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


@pytest.mark.slow
def test_an_int8_table_times_pieces_quantized_as_the_exporter_does(
    small_space, tmp_path, monkeypatch
):
    """--quantization=int8: every piece int8 in and out (the stem uint8 in, as
    an exported net takes its image), recorded in the table; a float table is
    not completed as int8 nor the reverse; the additivity report and the
    check time int8 nets for it."""
    from ai_edge_litert.interpreter import Interpreter

    from densenas_tf.latency.check import check_table_here
    from densenas_tf.latency.measure import build_piece_model, tflite_content
    from densenas_tf.latency.report import additivity_report
    from densenas_tf.latency.table import default_table_path, quantization_of

    keys = space_keys(small_space).all_keys()
    for name in (
        next(k for k in keys if k.startswith("stem")),
        next(k for k in keys if "mbconv" in k),
    ):
        content = tflite_content(build_piece_model(keys[name]), "int8", name.startswith("stem"))
        interpreter = Interpreter(model_content=content)
        dtype_in = interpreter.get_input_details()[0]["dtype"].__name__
        assert dtype_in == ("uint8" if name.startswith("stem") else "int8"), name
        assert interpreter.get_output_details()[0]["dtype"].__name__ == "int8"
    out = tmp_path / "int8.json"
    table, measured = build_table(
        small_space, out, warmup=1, runs=3, log=lambda line: None, quantization="int8"
    )
    assert measured == len(keys) and quantization_of(LatencyTable.load(out)) == "int8"
    assert all(e.median_ms > 0 for e in table.entries.values())
    with pytest.raises(LatencyTableError, match="quantization: file has 'int8', asked 'none'"):
        build_table(small_space, out, warmup=1, runs=3, log=lambda line: None)
    assert default_table_path("s", quantization="int8").name == "s_tflite_t1_b1_int8.json"
    report = additivity_report(
        small_space, table, num_random=2, warmup=1, runs=5, log=lambda line: None,
        include_reference=False,
    )  # fmt: skip
    assert report["quantization"] == "int8" and "int8, 1 thread(s)" in lut_report.format_report(
        report
    )
    import densenas_tf.latency.check as check

    timed, original = [], check.arch_timer
    monkeypatch.setattr(check, "arch_timer", lambda *a: timed.append(a[-1]) or original(*a))
    check_table_here(small_space, table, str(out), num_nets=2, rounds=1, runs=3,
                     max_mape=1e9, log=lambda line: None)  # fmt: skip
    assert timed == ["int8", "int8"]


def test_builder_refuses_to_complete_a_table_of_another_device_or_runtime(small_space, tmp_path):
    """A partial table begun elsewhere (its device relabelled, or another
    TensorFlow) is not completed with this machine's timings; the file is kept."""
    from densenas_tf.latency.measure import device_description, versions

    out = tmp_path / "lut.json"
    for device, runtime in (
        ("Pixel 7", versions()),
        (device_description(), {**versions(), "tensorflow_version": "2.0.0"}),
    ):
        LatencyTable(new_provenance(small_space, "tflite", 1, 1, device, runtime)).save(out)
        before = out.read_text()
        with pytest.raises(LatencyTableError, match="was begun on another device or runtime") as e:
            build_table(small_space, out, warmup=1, runs=3, log=lambda line: None)
        if device == "Pixel 7":
            assert f"device: the file's is 'Pixel 7', here {device_description()!r}" in str(e.value)
        else:
            assert "tensorflow_version: the file's is '2.0.0'" in str(e.value)
        assert "Choose another --out" in str(e.value)
        assert out.read_text() == before
    # Same model name and runtime, other vector instructions: refused too.
    prov = new_provenance(small_space, "tflite", 1, 1, device_description(), versions())
    LatencyTable({**prov, "vector_isa": "SSE2"}).save(out)
    with pytest.raises(LatencyTableError, match="vector_isa: the file's is 'SSE2'"):
        build_table(small_space, out, warmup=1, runs=3, log=lambda line: None)


def test_a_new_table_records_the_vector_instructions(small_space, tmp_path):
    from densenas_tf.latency.measure import vector_isa

    out = tmp_path / "lut.json"
    table, _ = build_table(small_space, out, warmup=1, runs=2, log=lambda line: None)
    assert table.provenance["vector_isa"] == vector_isa()
    assert LatencyTable.load(out).provenance["vector_isa"] == vector_isa()


@pytest.fixture(scope="module")
def chain_space_file(tmp_path_factory):
    """A tiny space of 8 table entries (one head op, skip-only stacking, m = 1), as a file."""
    config = load_space("tiny").to_config()
    config["name"] = "tiny_chain"
    config["head_ops"] = ["mbconv_k3_e3"]
    config["stacking_ops"] = ["skip"]
    config["connections_per_stage"] = [1, 1, 1, 1]
    path = tmp_path_factory.mktemp("spaces") / "tiny chain.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def chain_table(chain_space_file, tmp_path_factory):
    """tools/build_lut.py run once on chain_space_file: (its result, the table file)."""
    out = tmp_path_factory.mktemp("lut") / "chain.json"
    result = run_tool(
        "build_lut", f"--space={chain_space_file}", "--warmup=1", "--runs=3", f"--out={out}"
    )
    return result, out


@pytest.mark.slow
def test_build_lut_tool_builds_the_space_table_then_measures_nothing_new(
    chain_space_file, chain_table
):
    result, out = chain_table
    assert result.returncode == 0, result.stderr[-2000:]
    space = load_space(chain_space_file)
    needed = set(space_keys(space).all_keys())
    assert len(needed) == 8
    assert measured_now(result.stdout) == (8, 8)
    table = LatencyTable.load(out)
    assert set(table.entries) == needed
    assert all(entry.count == 3 for entry in table.entries.values())
    table.check_space(space)
    assert table.provenance["space"] == "tiny_chain"

    again = run_tool(
        "build_lut", f"--space={chain_space_file}", "--warmup=1", "--runs=3", f"--out={out}"
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert measured_now(again.stdout) == (8, 0)
    assert "8 entries needed, 8 already in" in again.stderr
    assert LatencyTable.load(out).entries == table.entries


@pytest.mark.slow
def test_missing_entries_hint_of_a_space_file_is_a_command_that_works(
    chain_space_file, chain_table, tmp_path
):
    _, built = chain_table
    out = tmp_path / "partial.json"
    partial = LatencyTable.load(built)
    dropped = sorted(partial.entries)[:2]
    for key in dropped:
        del partial.entries[key]
    partial.save(out)

    result = run_tool("lut_report", f"--space={chain_space_file}", f"--table={out}", "--runs=1")
    assert result.returncode == 1
    message = error_message(result.stderr)
    assert message.startswith(f"the latency table {out} lacks 2 entries:")
    assert all(key in message for key in dropped)
    command = message.splitlines()[-1].strip()
    assert command == (
        f"densenas-build-lut --space={shlex.quote(str(chain_space_file))} "
        f"--backend=tflite --threads=1 --batch_size=1 --out={out}"
    )
    rebuilt = run_hint(command)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert measured_now(rebuilt.stdout) == (8, 2)
    LatencyTable.load(out).check_space(load_space(chain_space_file))


@pytest.mark.slow
def test_build_lut_tool_refuses_an_edited_space_with_the_command_that_rebuilds(
    chain_space_file, chain_table, tmp_path
):
    _, built = chain_table
    out = tmp_path / "chain.json"
    out.write_text(built.read_text())
    config = json.loads(chain_space_file.read_text())
    config["final_conv_width"] = 40  # edited, name kept
    edited_file = tmp_path / "edited.json"
    edited_file.write_text(json.dumps(config))
    edited = load_space(edited_file)

    result = run_tool("build_lut", f"--space={edited_file}", f"--out={out}")
    assert result.returncode == 1
    message = error_message(result.stderr)
    old_fingerprint = LatencyTable.load(out).provenance["space_fingerprint"]
    assert message == (
        f"{out}: the content of space 'tiny_chain' changed since this latency table was built "
        f"(fingerprint {old_fingerprint} then, {edited.fingerprint()} now), so its entries do "
        "not describe the space; move the stale table aside and rebuild it with: "
        f"mv {out} {out}.stale && densenas-build-lut --space={edited_file} "
        f"--backend=tflite --threads=1 --batch_size=1 --out={out}"
    )
    assert "asked" not in message

    command = message.split(" rebuild it with: ", 1)[1]
    rebuilt = run_hint(command)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert measured_now(rebuilt.stdout) == (8, 8)
    LatencyTable.load(out).check_space(edited)
    assert LatencyTable.load(f"{out}.stale").provenance["space_fingerprint"] == old_fingerprint


# ----- the report's figures -----------------------------------------------------------
def test_mape_and_spearman_of_known_pairs():
    # |110-100|/100, |90-100|/100, |150-100|/100, |40-50|/50: 10, 10, 50, 20 %
    assert mape_percent([110, 90, 150, 40], [100, 100, 100, 50]) == pytest.approx(22.5, rel=1e-12)
    # Relative to the measured value, not to the prediction.
    assert mape_percent([100.0], [50.0]) == pytest.approx(100.0, rel=1e-12)
    assert mape_percent([3.0, 5.0], [3.0, 5.0]) == 0.0
    # Ties take their average rank: ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3).
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10), rel=1e-12)
    # 1 - 6 * (4 + 1 + 1) / (3 * 8)
    assert spearman([3, 1, 2], [1, 2, 3]) == pytest.approx(-0.5, rel=1e-12)
    assert spearman([5, 5, 5], [1, 2, 3]) == 0.0  # no ranking at all


@pytest.mark.slow
def test_lut_report_json(fashion_space):
    result = run_tool(
        "lut_report",
        "--space=fashion_mnist",
        "--num_random=3",
        "--warmup=2",
        "--runs=10",
        "--json",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    rows = report["rows"]
    assert report["n_paths"] == len(rows) == 3
    assert report["n_reference"] == 0  # no shipped net lies in this space
    assert (report["space"], report["backend"], report["threads"], report["batch_size"]) == (
        "fashion_mnist",
        "tflite",
        1,
        1,
    )
    # The nets are the seeded random paths, in order.
    rng = np.random.default_rng(0)
    expected = [lut_report.random_arch(fashion_space, rng, f"random_{i}") for i in range(3)]
    assert [(r["name"], r["block_string"]) for r in rows] == [
        (spec.name, spec.to_block_string()) for spec in expected
    ]
    # Each prediction is the shipped table's sum for that net, read here from
    # the table file's entries for the net's pieces.
    table_file = default_table_path("fashion_mnist")
    for row, spec in zip(rows, expected):
        assert row["predicted_ms"] == pytest.approx(table_prediction_ms(spec, table_file), rel=1e-9)
        assert row["measured_ms"] > 0
        assert row["error_percent"] == pytest.approx(
            100 * (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"], rel=1e-12
        )
    # The summary figures: of the predictions made here against its measurements.
    predicted = [table_prediction_ms(spec, table_file) for spec in expected]
    measured = [r["measured_ms"] for r in rows]
    by_hand = sum(abs(p - m) / m for p, m in zip(predicted, measured)) / len(rows) * 100
    assert report["mape_percent"] == pytest.approx(by_hand, rel=1e-9)
    mean_abs_row_error = sum(abs(r["error_percent"]) for r in rows) / len(rows)
    assert report["mape_percent"] == pytest.approx(mean_abs_row_error, rel=1e-12)
    assert report["spearman"] == pytest.approx(spearman(predicted, measured), rel=1e-9)


# ----- an unwritable --plot is found before any timing ---------------------------------
@pytest.mark.slow
def test_unwritable_plot_is_refused_before_timing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    plot = blocker / "plots" / "lut.png"
    result = run_tool(
        "lut_report", "--space=fashion_mnist", "--num_random=1", "--runs=1", f"--plot={plot}"
    )
    assert result.returncode == 1
    assert error_message(result.stderr) == (
        f"cannot write the --plot file (checked before timing): Not a directory: {plot}; "
        "check the path: a part of it is a file"
    )
    assert "[1/" not in result.stderr  # nothing was timed
    assert "predicted" not in result.stderr


@pytest.mark.parametrize(
    "failing_call,error,fix",
    [
        ("open", errno.EROFS, "Read-only file system: {plot}; pick a writable directory"),
        (
            "write",
            errno.ENOSPC,
            "No space left on device: {plot}; free some disk space (or pick a run directory on another disk) and re-run",
        ),
        (
            "fsync",
            errno.ENOSPC,
            "No space left on device: {plot}; free some disk space (or pick a run directory on another disk) and re-run",
        ),
        (
            "open",
            errno.EACCES,
            "Permission denied: {plot}; pick a directory you may write to, or fix its permissions",
        ),
    ],
)
def test_plot_check_reports_a_refused_write(tmp_path, monkeypatch, failing_call, error, fix):
    def refuse(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, failing_call, refuse)
    plot = tmp_path / "plots" / "lut.png"
    with pytest.raises(ReportOutputError) as info:
        check_writable(plot)
    monkeypatch.undo()
    assert str(info.value) == (
        f"cannot write the --plot file (checked before timing): {fix.format(plot=plot)}"
    )
    assert list((tmp_path / "plots").iterdir()) == []  # no probe left behind


def test_plot_check_refuses_a_directory_and_accepts_a_new_one(tmp_path):
    with pytest.raises(ReportOutputError) as info:
        check_writable(tmp_path)
    assert str(info.value) == (
        f"cannot write the --plot file (checked before timing): Is a directory: {tmp_path}; "
        "give a file, not a directory"
    )
    plot = tmp_path / "new" / "deeper" / "lut.png"
    check_writable(plot)  # the missing directories are made, as the atomic write does
    assert plot.parent.is_dir()
    assert list(plot.parent.iterdir()) == []


def test_plot_is_written_atomically_where_the_check_passed(tmp_path):
    report = {
        "space": "s",
        "mape_percent": 1.0,
        "spearman": 1.0,
        "rows": [
            {"predicted_ms": 1.0, "measured_ms": 1.1},
            {"predicted_ms": 2.0, "measured_ms": 1.9},
        ],
    }
    plot = tmp_path / "out" / "lut.png"
    check_writable(plot)
    lut_report.plot_report(report, plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in plot.parent.iterdir()] == ["lut.png"]
