"""The comparison pipeline end to end in its reduced mode: every net in the table
has its ArchSpec, a test accuracy and a measured latency, and the files agree."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import keras_accuracy, run_tool, table_prediction_ms

from densenas_tf.experiments.compare import (
    REDUCED,
    format_results,
    outcome,
    run_compare,
    summarise,
)
from densenas_tf.nn.models import build_model
from densenas_tf.space.arch_spec import ArchSpec, count_costs
from densenas_tf.space.baselines import mobilenet_v2_fashion


def test_mobilenet_v2_fashion_widths_scale():
    small, full = mobilenet_v2_fashion(0.5), mobilenet_v2_fashion(1.0)
    assert [b.width for b in full.blocks] == [16, 24, 32, 48, 72]
    assert [b.width for b in small.blocks] == [8, 12, 16, 24, 36]
    assert count_costs(small).mult_adds < count_costs(full).mult_adds
    assert build_model(full).output_shape == (None, 10)


def _fastest_tflite_ms(model) -> float:
    """The fastest of 50 runs of the model as float TFLite (1 thread, batch 1),
    timed here: other processes can delay a run but not speed it up."""
    from ai_edge_litert.interpreter import Interpreter

    from densenas_tf.exporting.export import convert_tflite
    from densenas_tf.latency.measure import timed_runs

    interpreter = Interpreter(model_content=convert_tflite(model, "none"), num_threads=1)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]
    interpreter.set_tensor(given["index"], np.zeros(given["shape"], np.float32))
    return 1e3 * min(timed_runs(interpreter.invoke, warmup=20, runs=50))


@pytest.mark.slow
def test_reduced_comparison(tmp_path):
    import statistics

    import keras

    from densenas_tf.data.sources import load_image_data
    from densenas_tf.latency.table import default_table_path

    results = run_compare(tmp_path / "compare", REDUCED, log=lambda line: None)
    rows = results["rows"]
    families = sorted({r["family"] for r in rows})
    assert families == ["DenseNAS", "MobileNetV2", "fixed-block", "random search"]
    assert len(rows) == len(REDUCED.lams) + 1 + len(REDUCED.mbv2_widths) + 1
    tables = {name: default_table_path(name) for name in ("fashion_mnist", "fixed_block_fashion")}
    assert results["latency_tables"] == {name: str(path) for name, path in tables.items()}
    data = load_image_data(
        "fashion_mnist", train_limit=REDUCED.train_limit, test_limit=REDUCED.test_limit, seed=0
    )
    images, labels = data.test_images, data.test_labels
    assert results["test_images"] == len(labels) == REDUCED.test_limit
    out = tmp_path / "compare"
    for row in rows:
        spec = ArchSpec.from_json(Path(row["arch_file"]).read_text())
        assert spec.to_block_string() == row["arch"]
        assert count_costs(spec).mult_adds == row["mult_adds"]
        assert row["seed"] == 0
        # The test accuracy is the retrained model's on the test images, and
        # the measured latency its latency.json's.
        train_dir = out / "seed0" / "train" / row["net"]
        metrics = json.loads((train_dir / "metrics.json").read_text())
        model = keras.models.load_model(train_dir / "model.keras")
        assert row["test_accuracy"] == metrics["test_accuracy"]
        assert row["test_accuracy"] == keras_accuracy(model, images, labels), row["net"]
        assert row["tflite_ms"] == json.loads((train_dir / "latency.json").read_text())["tflite_ms"]
        fastest_ms = _fastest_tflite_ms(model)
        # The median of 5 runs against the fastest of 50 here: a window of 0.6
        # to 5. A wrong unit (seconds or microseconds taken for ms) is off by
        # 1000x, far outside it. Below: not under the fastest run here, 40 %
        # spared for a quieter moment. Above: a median of a loaded moment runs
        # up to about twice the fastest (0.16 ms predicted, up to 0.34 ms
        # measured, below), 5 leaves over twice that for a busier machine.
        assert 0.6 <= row["tflite_ms"] / fastest_ms <= 5, (row["net"], fastest_ms)
        if row["family"] == "MobileNetV2":  # no table has its pieces
            assert row["predicted_ms"] is None
            continue
        # The prediction is the table of the net's space's (the fixed-block
        # space's own for its net), against the net timed here. The shipped
        # tables were measured on this kind of machine, unloaded; under the
        # load tests share the machine with, a net runs here in up to about
        # twice its prediction (the full main job's net: 0.16 ms predicted,
        # 0.22-0.34 ms measured), and on a machine of the same name with
        # AVX-512 in about 0.6x it (1.76x measured as the ratio below). A
        # prediction from other pieces (that net without its stacking ops:
        # 0.06 ms; the table's every entry: 16 ms) or in other units falls
        # outside [0.35, 3] of it.
        table = tables["fixed_block_fashion" if row["family"] == "fixed-block" else "fashion_mnist"]
        assert row["predicted_ms"] == pytest.approx(table_prediction_ms(spec, table), rel=1e-12)
        assert 0.35 <= row["predicted_ms"] / fastest_ms <= 3, (row["net"], fastest_ms)
    # Random search kept to within 10 % of the DenseNAS nets' predicted latencies.
    dense = [r["predicted_ms"] for r in rows if r["family"] == "DenseNAS"]
    random_row = next(r for r in rows if r["family"] == "random search")
    low, high = random_row["latency_range_ms"]
    assert (low, high) == pytest.approx((0.9 * min(dense), 1.1 * max(dense)), rel=1e-12)
    assert low <= random_row["predicted_ms"] <= high
    assert 1 <= random_row["trials"] <= REDUCED.random_max_trials
    # One seed: each net's mean is its one run; no standard error, no verdict.
    assert [s["net"] for s in results["summary"]] == [r["net"] for r in rows]
    for s, row in zip(results["summary"], rows):
        assert s["seeds"] == [0] and s["family"] == row["family"]
        assert s["test_accuracy_mean"] == statistics.fmean([row["test_accuracy"]])
        assert s["tflite_ms_mean"] == statistics.fmean([row["tflite_ms"]])
        assert np.isnan(s["test_accuracy_se"]) and np.isnan(s["tflite_ms_se"])
    assert len(results["outcome"]) == len(REDUCED.lams) * 3  # against 3 families each
    assert all(line.endswith("no verdict") for line in results["outcome"])
    assert json.loads((out / "results.json").read_text())["rows"] == rows
    assert (out / "compare.md").read_text().strip() == format_results(results)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_finished_random_search_is_read_back_not_run_again(tmp_path):
    """A resumed comparison takes the random search's net from its result.json
    (keras-tuner reloads trials in no fixed order, so equal scores could pick
    another net and the retraining would then refuse its directory)."""
    from densenas_tf.experiments.compare import random_search

    spec = mobilenet_v2_fashion(0.5)
    info = {"trials": 2, "best_val_acc": 0.5}
    (tmp_path / "result.json").write_text(json.dumps({"arch": spec.to_dict(), "info": info}))
    # No data and no budget: a search that ran would fail at once.
    got, got_info = random_search(
        tmp_path, "fashion_mnist", (0.1, 0.2), 0.0, None, None, None, REDUCED, print
    )
    assert got.to_json() == spec.to_json() and got_info == info
    assert not (tmp_path / "tuner").exists()


@pytest.mark.slow
def test_compare_binary_refuses_bad_schedule_flags(tmp_path):
    for flag, name in (
        ("--train_epochs=0", "--train_epochs"),
        ("--random_max_trials=0", "--random_max_trials"),
    ):
        done = run_tool("compare", f"--run_dir={tmp_path / 'run'}", flag, timeout=300)
        assert done.returncode != 0
        assert f"{name} must be at least 1" in done.stderr
        assert not (tmp_path / "run").exists()  # refused before anything was written
    done = run_tool("compare", f"--run_dir={tmp_path / 'run'}", "--report_only", timeout=300)
    assert done.returncode != 0 and "--report_only goes with --equal_latency" in done.stderr
    done = run_tool(
        "compare", f"--run_dir={tmp_path / 'run'}", "--equal_latency", "--report_only",
        timeout=300,
    )  # fmt: skip
    assert done.returncode != 0 and "no budgets.json" in done.stderr
    assert not (tmp_path / "run").exists()


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


def test_latencies_are_measured_together_in_interleaved_rounds_and_cached(tmp_path):
    from densenas_tf.experiments.compare import ComparePlan, measure_latencies

    dirs = [tmp_path / name for name in ("a", "b", "c")]
    for d in dirs:
        d.mkdir()
    calls = []
    # Each model's timings over its rounds; "b" has one slow round (a load spike).
    timings = {"a": iter([0.30, 0.31, 0.29]), "b": iter([0.50, 0.90, 0.51]), "c": iter([0.2] * 3)}

    def make_timer(model_dir):
        def timer(runs):
            calls.append((model_dir.name, runs))
            return next(timings[model_dir.name])

        return timer

    (dirs[2] / "latency.json").write_text(json.dumps({"tflite_ms": 0.25}))  # already measured
    plan = ComparePlan(latency_rounds=3, latency_runs=7)
    latencies = measure_latencies([*dirs, dirs[0]], plan, make_timer=make_timer)
    # Only the unmeasured ones, each once per round, round after round.
    assert calls == [("a", 7), ("b", 7)] * 3
    assert latencies == {dirs[0]: 0.30, dirs[1]: 0.51, dirs[2]: 0.25}  # medians of the rounds
    record = json.loads((dirs[1] / "latency.json").read_text())
    assert record == {"tflite_ms": 0.51, "round_medians_ms": [0.50, 0.90, 0.51]}
    calls.clear()
    assert measure_latencies(dirs, plan, make_timer=make_timer) == latencies  # all cached
    assert calls == []


def test_hparams_dashboard_holds_each_net_with_its_method_lambda_seed_and_metrics(tmp_path):
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata as hp_metadata

    from densenas_tf.experiments.compare import HPARAM_METRICS, write_hparams

    rows = [
        {"net": "densenas_lam0.15", "family": "DenseNAS", "seed": 0, "lam": 0.15,
         "test_accuracy": 0.9102, "tflite_ms": 0.385, "predicted_ms": 0.381,
         "params": 219458, "mult_adds": 14460000},
        {"net": "densenas_lam0.15", "family": "DenseNAS", "seed": 1, "lam": 0.15,
         "test_accuracy": 0.9088, "tflite_ms": 0.371, "predicted_ms": 0.37,
         "params": 201000, "mult_adds": 13000000},
        {"net": "mobilenet_v2_x0.5", "family": "MobileNetV2", "seed": 0, "width": 0.5,
         "test_accuracy": 0.8981, "tflite_ms": 0.121, "predicted_ms": None,
         "params": 55762, "mult_adds": 4330000},
    ]  # fmt: skip
    out = tmp_path / "tensorboard"
    (out / "stale_run").mkdir(parents=True)  # written anew: a stale run is gone
    write_hparams(out, rows)
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["densenas_lam0.15_seed0", "densenas_lam0.15_seed1", "mobilenet_v2_x0.5_seed0"]
    top = event_accumulator.EventAccumulator(str(out))
    top.Reload()
    config = hp_metadata.parse_experiment_plugin_data(
        top.SummaryMetadata(hp_metadata.EXPERIMENT_TAG).plugin_data.content
    )
    assert {h.name for h in config.hparam_infos} == {"net", "method", "seed", "lam", "width"}
    assert [m.name.tag for m in config.metric_infos] == list(HPARAM_METRICS)
    for row in rows:
        run = event_accumulator.EventAccumulator(str(out / f"{row['net']}_seed{row['seed']}"))
        run.Reload()
        start = hp_metadata.parse_session_start_info_plugin_data(
            run.SummaryMetadata(hp_metadata.SESSION_START_INFO_TAG).plugin_data.content
        )
        shown = {k: (v.string_value or v.number_value) for k, v in start.hparams.items()}
        expected = {"net": row["net"], "method": row["family"], "seed": row["seed"]}
        expected.update({k: row[k] for k in ("lam", "width") if k in row})
        assert shown == expected
        for tag in HPARAM_METRICS:
            if row[tag] is None:
                assert tag not in run.Tags()["tensors"]
                continue
            (event,) = run.Tensors(tag)
            assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(row[tag], rel=1e-6)


def test_verdicts_at_equal_latency_follow_the_two_standard_error_rule():
    from densenas_tf.experiments.equal_latency import verdicts

    def entry(family, width, mean, se):
        return {
            "family": family, "width": width, "budget_ms": 0.3 * width, "net": f"{family}{width}",
            "test_accuracy_mean": mean, "test_accuracy_se": se, "tflite_ms_mean": 0.3 * width,
        }  # fmt: skip

    summary = [
        entry("DenseNAS", 0.5, 0.900, 0.002),
        entry("random search", 0.5, 0.880, 0.002),  # +2.0 points, se 0.28: a win
        entry("MobileNetV2", 0.5, 0.899, 0.002),  # +0.1 points: within noise
        entry("DenseNAS", 1.0, 0.900, 0.002),
        entry("MobileNetV2", 1.0, 0.920, 0.002),  # -2.0 points: a loss
        entry("fixed-block", 1.0, 0.9, float("nan")),  # one seed: no verdict
    ]
    found = {(v["budget"], v["against"]): v for v in verdicts(summary, (0.5, 1.0))}
    assert found["x0.5", "random search"]["verdict"].startswith("DenseNAS wins")
    assert found["x0.5", "random search"]["difference_points"] == pytest.approx(2.0)
    assert found["x0.5", "random search"]["standard_error_points"] == pytest.approx(
        100 * np.hypot(0.002, 0.002)
    )
    assert found["x0.5", "MobileNetV2"]["verdict"].startswith("within two standard errors")
    assert found["x1", "MobileNetV2"]["verdict"].startswith("DenseNAS loses to MobileNetV2")
    assert found["x1", "fixed-block"]["verdict"].startswith("one seed")
    assert ("x1", "random search") not in found


@pytest.mark.slow
def test_reduced_comparison_at_equal_latency(tmp_path):
    """The equal-latency pipeline end to end (one budget, one seed): the budget
    is MobileNetV2's measured latency, the DenseNAS net predicts within it, the
    random search's net within [0.9, 1] x it, every net is trained and timed,
    and a second run trains and measures nothing again. The fixed-block search
    is left out here: it is the same search on another space, run end to end
    by test_reduced_comparison, and a search is most of this test's time."""
    import dataclasses

    from densenas_tf.experiments import equal_latency

    plan = dataclasses.replace(equal_latency.REDUCED, fixed_block=False)
    out = tmp_path / "equal"
    results = equal_latency.run_equal_latency(out, plan, log=lambda line: None)
    budget = results["budgets"]["x0.75"]["target_ms"]
    assert budget > 0 and results["budgets"]["x0.75"]["source"].startswith("mobilenet_v2_x0.75")
    rows = {r["net"]: r for r in results["rows"]}
    assert set(rows) == {"densenas_x0.75", "random_x0.75", "mobilenet_v2_x0.75"}
    assert rows["densenas_x0.75"]["predicted_ms"] <= budget + 1e-9
    assert 0.9 * budget <= rows["random_x0.75"]["predicted_ms"] <= budget
    assert rows["random_x0.75"]["trials"] >= 1
    for row in rows.values():
        assert row["budget_ms"] == budget and 0 < row["test_accuracy"] <= 1
        assert row["tflite_ms"] > 0
        assert row["timed_on"] == equal_latency.machine_description()
    assert {v["against"] for v in results["verdicts"]} == {"random search", "MobileNetV2"}
    assert all(v["verdict"].startswith("one seed") for v in results["verdicts"])
    text = (out / "equal_latency.md").read_text()
    assert text.strip() == equal_latency.format_equal_latency(results)
    assert (out / "equal_latency.png").read_bytes()[:4] == b"\x89PNG"
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "results.json"}
    again = equal_latency.run_equal_latency(out, plan, log=lambda line: None)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "results.json"} == (
        stamps
    )
    assert again["rows"] == results["rows"]
    # The records alone resume the run elsewhere: nothing is searched, trained or timed again.
    moved = tmp_path / "moved"
    copied = equal_latency.copy_records(out, moved)
    assert {p.parts[1] for p in copied if p.parts[0] == "seed0"} == {
        "searched", "archs", "random_x0.75", "train"
    }  # fmt: skip
    third = equal_latency.run_equal_latency(moved, plan, log=lambda line: None)
    assert third["rows"] == results["rows"]
    # The report from the records alone, running nothing, holds the same rows.
    assert equal_latency.report_from_records(moved, plan)["rows"] == results["rows"]
    assert [h["net"] for h in results["budget_held"]] == ["densenas_x0.75"]
    # Re-derived at two lower edges from the search's checkpoint and timed with MobileNetV2.
    held = equal_latency.rederived_budget_held(out, plan, (0.9, 0.95), rounds=1, runs=2)
    assert [(e["min_fraction"], e["seed"]) for e in held["rows"]] == [(0.9, 0), (0.95, 0)]
    for e in held["rows"]:
        assert e["predicted_ms"] <= budget + 1e-9 and e["measured_ms"] > 0
        assert e["measured_over_mobilenet_v2"] == pytest.approx(
            e["measured_ms"] / held["mobilenet_v2_ms"]["x0.75"]
        )
    assert "min_fraction 0.95:" in (out / "budget_held.md").read_text()
    assert held["agreement"] == []  # one seed: nothing to agree with
    with pytest.raises(ValueError, match="nothing to re-derive"):
        equal_latency.rederived_budget_held(moved, plan, (0.9,), rounds=1, runs=2)
    # Without the checkpoint, the nets of an earlier budget_held.json are timed again.
    shutil.copy(out / "budget_held.json", moved / "budget_held.json")
    carried = equal_latency.rederived_budget_held(moved, plan, (0.9, 0.95), rounds=1, runs=2)
    assert [e["carried"] for e in carried["rows"]] == [True, True]
    for key in ("name", "min_fraction", "predicted_ms", "arch", "decisions"):
        assert [e[key] for e in carried["rows"]] == [e[key] for e in held["rows"]]
    assert all(e["measured_ms"] > 0 for e in carried["rows"])
    assert "\\* Derived earlier" in (moved / "budget_held.md").read_text()
    with pytest.raises(ValueError, match="nothing to re-derive"):  # 0.8 was never derived
        equal_latency.rederived_budget_held(moved, plan, (0.8,), rounds=1, runs=2)
    assert not list(moved.rglob("ckpt")) and not list(moved.rglob("*.keras"))


def test_the_band_sampler_prices_draws_as_the_table_and_keeps_only_the_band():
    """The batched prices equal LatencyCosts.arch_ms of the same draws, and a
    narrow band near the fast end (1 in about 50,000 uniform draws) is found."""
    from densenas_tf.experiments.compare import BandSampler
    from densenas_tf.latency.expected import latency_costs
    from densenas_tf.latency.table import LatencyTable, default_table_path
    from densenas_tf.space import budget
    from densenas_tf.space.spaces import load_space

    space = load_space("fashion_mnist")
    costs = latency_costs(space, LatencyTable.load(default_table_path("fashion_mnist")))
    paths = space.enumerate_paths()
    sampler = BandSampler(space, costs, paths, 0.0, np.inf)
    rng = np.random.default_rng(0)
    ids = rng.integers(len(paths), size=50)
    heads = rng.integers(len(space.head_ops), size=(50, len(space.head_edges)))
    stacks = rng.integers(len(space.stacking_ops), size=(50, len(space.stacking_layers)))
    batch = sampler.latencies(ids, heads, stacks)
    for i in range(50):
        one = costs.arch_ms(
            space, paths[ids[i]], dict(enumerate(heads[i])), dict(enumerate(stacks[i]))
        )
        assert batch[i] == pytest.approx(one, rel=1e-12)
    zeros = dict(
        alpha_head=np.zeros((len(space.head_edges), len(space.head_ops))),
        alpha_stack=np.zeros((len(space.stacking_layers), len(space.stacking_ops))),
        beta=np.zeros(len(space.edges)),
    )
    fastest = budget.fastest_architecture(space, costs, **zeros).latency_ms
    low, high = fastest * 2.0, fastest * 2.2  # about 1 in 50,000 uniform draws
    narrow = BandSampler(space, costs, paths, low, high)
    values = narrow.draw(np.random.default_rng(1))
    assert values is not None and set(values) == {"path"} | {
        f"head_{r}" for r in range(len(space.head_edges))
    } | {f"stack_{r}" for r in range(len(space.stacking_layers))}
    got = costs.arch_ms(
        space, paths[values["path"]],
        {r: values[f"head_{r}"] for r in range(len(space.head_edges))},
        {r: values[f"stack_{r}"] for r in range(len(space.stacking_layers))},
    )  # fmt: skip
    assert low <= got <= high
    assert (
        BandSampler(space, costs, paths, 0.0, fastest / 2).draw(
            np.random.default_rng(2), batch=1000, max_draws=5000
        )
        is None
    )  # nothing is that fast: gives up after max_draws


def test_a_report_from_records_takes_the_finished_seeds_and_shows_the_budget_held(tmp_path):
    """report_from_records runs nothing: it reads each seed's archs, metrics and
    timings, leaves out a seed with any net unfinished, and tabulates each
    searched net's predicted and measured latency against its budget and the
    seed's MobileNetV2."""
    import dataclasses

    from densenas_tf.experiments import equal_latency
    from densenas_tf.latency.report import random_path_and_ops
    from densenas_tf.latency.table import LatencyTable, default_table_path
    from densenas_tf.space.derive import arch_from_path
    from densenas_tf.space.spaces import load_space

    plan = dataclasses.replace(
        equal_latency.REDUCED, widths=(0.75,), seeds=(0, 1), fixed_block=True
    )
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"no budgets\.json"):
        equal_latency.report_from_records(run, plan)
    target = 0.2
    run.mkdir()
    (run / "budgets.json").write_text(json.dumps({"x0.75": {"target_ms": target}}))
    rng = np.random.default_rng(0)
    specs = {}
    for label, space in (
        ("densenas_x0.75", "fashion_mnist"),
        ("random_x0.75", "fashion_mnist"),
        ("fixed_block_x0.75", "fixed_block_fashion"),
    ):
        sp = load_space(space)
        specs[label] = arch_from_path(sp, *random_path_and_ops(sp, rng), name=label)
    specs["mobilenet_v2_x0.75"] = mobilenet_v2_fashion(0.75)
    measured = {"densenas_x0.75": 0.19, "random_x0.75": 0.185, "fixed_block_x0.75": 0.25,
                "mobilenet_v2_x0.75": 0.21}  # fmt: skip
    for seed, labels in ((0, list(specs)), (1, ["densenas_x0.75", "random_x0.75"])):
        for label in labels:
            specs[label].save(run / f"seed{seed}" / "archs" / f"{label}.json")
            model_dir = run / f"seed{seed}" / "train" / label
            model_dir.mkdir(parents=True)
            accuracy = 0.8 + 0.01 * seed + 0.001 * len(label)
            (model_dir / "metrics.json").write_text(
                json.dumps({"test_accuracy": accuracy, "test_images": 300})
            )
            (model_dir / "latency.json").write_text(
                json.dumps({"tflite_ms": measured[label], "machine": "test CPU, AVX2"})
            )
    searched = run / "seed0" / "searched"
    searched.mkdir()
    (searched / "densenas_x0.75.json").write_text(json.dumps({"info": {"path_margin": 0.4}}))
    results = equal_latency.report_from_records(run, plan)
    assert list(results["plan"]["seeds"]) == [0] and results["seeds_unfinished"] == [1]
    rows = {r["net"]: r for r in results["rows"]}
    assert set(rows) == set(specs) and rows["densenas_x0.75"]["path_margin"] == 0.4
    assert rows["mobilenet_v2_x0.75"]["predicted_ms"] is None
    table = LatencyTable.load(default_table_path("fashion_mnist"))
    assert rows["densenas_x0.75"]["predicted_ms"] == pytest.approx(
        table.predicted_ms(specs["densenas_x0.75"])
    )
    held = {h["net"]: h for h in results["budget_held"]}
    assert set(held) == {"densenas_x0.75", "fixed_block_x0.75"}
    assert held["densenas_x0.75"]["measured_fraction"] == pytest.approx(0.95)
    assert held["densenas_x0.75"]["measured_within_10_percent"]
    assert not held["fixed_block_x0.75"]["measured_within_10_percent"]  # 1.25 x T
    assert held["densenas_x0.75"]["measured_over_mobilenet_v2"] == pytest.approx(0.19 / 0.21)
    predicted = held["densenas_x0.75"]["predicted_ms"]
    assert held["densenas_x0.75"]["predicted_in_band"] == (0.9 * target <= predicted <= target)
    text = (run / "equal_latency.md").read_text()
    assert "The budget held" in text and "| x0.75 (0.2000) | densenas_x0.75 | 0 |" in text
    assert "seeds [1] are not finished" in text
    assert rows["densenas_x0.75"]["timed_on"] == "test CPU, AVX2"
    (run / "seed0" / "train" / "random_x0.75" / "latency.json").unlink()
    with pytest.raises(ValueError, match="no seed of"):
        equal_latency.report_from_records(run, plan)
