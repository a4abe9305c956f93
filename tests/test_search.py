"""The search loop: what each step may change, faults, resume, summaries (strategies:
test_strategy.py)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import read_events
from helpers import ROOT, made_up_table, micro_space, short_search_config, write_space

from densenas_tf.core.run_dir import RunDirError
from densenas_tf.latency.measure import build_table
from densenas_tf.latency.table import LatencyTable, LatencyTableError
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.objectives import Objective
from densenas_tf.search.run import load_search_data, run_search
from densenas_tf.search.searcher import SearchDivergedError, Searcher
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace

MICRO_SPACE = micro_space(
    "micro",
    widths=[8, 12, 16, 24, 32],
    feature_map_sizes=[28, 14, 14, 7, 7],
    stages=[0, 1, 1, 2, 3],
    stacking_layers=[0, 1, 1, 1, 0],
)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A small space on real 28x28 Fashion-MNIST, with a latency table measured here
    (tens of seconds: its users are in the slow tier, conftest.SLOW_FIXTURES)."""
    folder = tmp_path_factory.mktemp("micro")
    space_file = write_space(folder, MICRO_SPACE)
    space = SearchSpace.from_config(MICRO_SPACE)
    table_file = folder / "micro_lut.json"
    build_table(space, table_file, warmup=2, runs=5, log=lambda line: None)
    return {"space": str(space_file), "table": str(table_file), "folder": folder}


def _config(micro, **overrides):
    values = {
        "space": micro["space"],
        "latency_table": micro["table"],
        "objective": {"kind": "paper", "lam": 0.3, "tau_ms": 15.0},
        "data": {"train_limit": 320, "arch_fraction": 0.2},
        "batch_size": 32,
        "epochs": 2,
        "warmup_epochs": 1,
        "weight_lr": 0.05,
        "alpha_lr": 0.05,
        "beta_lr": 0.05,
        "latency_check": False,  # the table is measured here moments before
        "deterministic": False,  # op determinism is process-wide: tested in its own processes
        "checkpoint_every_steps": 3,
        "seed": 3,
        # Eager steps trace in seconds; the traced steps are tested against them below.
        "graph_steps": False,
    }
    values.update(overrides)
    return SearchConfig.from_dict(values)


def _searcher(micro, run_dir, **overrides):
    config = _config(micro, **overrides)
    space = SearchSpace.from_config(MICRO_SPACE)
    weight, arch = load_search_data(config)
    keras.utils.set_random_seed(config.seed)
    net = SuperNet.from_space(space, arch_init_seed=config.seed)
    table = LatencyTable.load(micro["table"])
    return Searcher(config, net, table, weight, arch, run_dir, log=lambda line: None)


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _assert_changed(a, b):
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))


def test_warm_up_and_weight_steps_leave_arch_params_and_arch_steps_leave_weights(micro, tmp_path):
    searcher = _searcher(micro, tmp_path)
    net = searcher.net
    arch0, weights0 = _values(net.arch_variables), _values(net.weight_variables)
    searcher._run_pass(1, epoch=0)  # warm-up: uniform draws
    arch1, weights1 = _values(net.arch_variables), _values(net.weight_variables)
    _assert_same(arch0, arch1)
    _assert_changed(weights0, weights1)
    searcher._run_pass(0, epoch=1)  # architecture pass
    arch2, weights2 = _values(net.arch_variables), _values(net.weight_variables)
    _assert_changed(arch1, arch2)
    _assert_same(weights1, weights2)
    searcher._run_pass(1, epoch=1)  # weight pass, draws by softmax(alpha)
    arch3, weights3 = _values(net.arch_variables), _values(net.weight_variables)
    _assert_same(arch2, arch3)
    _assert_changed(weights2, weights3)


def test_nan_in_the_data_stops_the_run_and_keeps_the_last_good_checkpoint(micro, tmp_path):
    searcher = _searcher(micro, tmp_path, epochs=1)
    images, labels = searcher.weight_data
    poisoned = images.astype(np.float32)
    # Batch 5 of the (seeded) weight pass order is poisoned: find where it lands.
    order = list(
        tf.data.Dataset.range(len(images))
        .shuffle(len(images), seed=searcher.shuffle_seed(0, 1), reshuffle_each_iteration=False)
        .as_numpy_iterator()
    )
    poisoned[order[5 * 32]] = np.nan
    searcher.weight_data = (poisoned, labels)
    with pytest.raises(SearchDivergedError, match=r"non-finite weight loss ce .* global step 5"):
        searcher.run()
    latest = tf.train.latest_checkpoint(str(tmp_path / "ckpt"))
    reader = tf.train.load_checkpoint(latest)
    assert int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE")) == 3
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name


def test_tensorboard_logs_each_step_and_epoch_under_one_described_name(micro, tmp_path):
    from densenas_tf.core.summaries import TAGS

    searcher = _searcher(micro, tmp_path, summary_every_steps=1)
    _, summary = searcher.run()
    scalars, meta = read_events(tmp_path / "tensorboard")
    # Every tag is one of the described names, with its description.
    for tag, (description, *_) in meta.items():
        assert tag in TAGS, tag
        assert description == TAGS[tag], tag
    # 8 weight steps (global steps 1-8) in warm-up; then 2 architecture steps (9-10) and
    # 8 weight steps (11-18); every step logged (summary_every_steps=1).
    weight_steps, arch_steps = list(range(1, 9)) + list(range(11, 19)), [9, 10]
    assert sorted(scalars["weight_step/cross_entropy"]) == weight_steps
    assert sorted(scalars["arch_step/loss"]) == arch_steps
    assert sorted(scalars["latency/step_expected_ms"]) == arch_steps
    assert "arch_step/alpha_learning_rate" in scalars and "lr/arch" not in scalars
    # The steps' own values: each epoch's mean is the epoch report's pass mean.
    reports = summary["epoch_reports"]
    assert [r["arch_pass"] is None for r in reports] == [True, False]
    for report, steps in ((reports[0], range(1, 9)), (reports[1], range(11, 19))):
        for key, tag in (("ce", "weight_step/cross_entropy"), ("acc", "weight_step/accuracy")):
            logged = [scalars[tag][s] for s in steps]
            assert all(np.isfinite(logged))
            assert np.mean(logged) == pytest.approx(report["weight_pass"][key], rel=1e-5)
    arch = reports[1]["arch_pass"]
    for key, tag in (("ce", "arch_step/cross_entropy"), ("loss", "arch_step/loss")):
        assert np.mean([scalars[tag][s] for s in arch_steps]) == pytest.approx(arch[key], rel=1e-5)
    for s in arch_steps:
        term = scalars["arch_step/loss"][s] - scalars["arch_step/cross_entropy"][s]
        assert scalars["arch_step/latency_term"][s] == pytest.approx(term, abs=1e-6)
    # Learning rates: the weights' cosine schedule written out, step by step.
    config = searcher.config
    total = searcher.weight_steps_per_epoch * config.epochs
    floor = config.weight_lr_min / config.weight_lr
    cosine = [
        config.weight_lr * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * t / total)))
        for t in range(total)
    ]
    logged_lr = [scalars["weight_step/learning_rate"][s] for s in weight_steps]
    np.testing.assert_allclose(logged_lr, cosine, rtol=1e-5)
    beta_rates = [scalars["arch_step/beta_learning_rate"][s] for s in arch_steps]
    assert beta_rates == pytest.approx([config.beta_lr] * 2)
    # Per-epoch figures at the global step that ends each epoch.
    for report, step in ((reports[0], 8), (reports[1], 18)):
        figures = {
            "eval/supernet_accuracy": report["supernet_eval"]["acc"],
            "eval/supernet_cross_entropy": report["supernet_eval"]["ce"],
            "latency/expected_ms": report["expected_latency_ms"],
            "latency/derived_predicted_ms": report["predicted_latency_ms"],
            "derived/params": report["params"],
            "derived/min_op_margin": report["min_op_margin"],
            "derived/near_ties": len(report["near_ties"]),
        }
        for tag, figure in figures.items():
            assert scalars[tag][step] == pytest.approx(figure, rel=1e-6, abs=1e-7), tag
        for tag in ("arch_params/entropy_head_ops", "arch_params/entropy_paths"):
            assert 0.0 <= scalars[tag][step] <= 1.0 + 1e-6, tag
    # Near-uniform path logits at the start (std 1e-3): after warm-up (no architecture
    # step yet) the normalised path entropy is that of near-uniform rows, about 1.
    assert scalars["arch_params/entropy_paths"][8] == pytest.approx(1.0, abs=1e-3)
    # Heatmaps: labelled figures, not constant; the architecture as a Markdown table.
    for tag in ("arch_params/head_ops", "arch_params/stacking_ops", "arch_params/paths"):
        images = meta[tag][2]
        assert len(images) == 2 and images[0].ndim == 3 and images[0].shape[2] == 3
        assert images[0].shape[0] >= 150 and images[0].shape[1] >= 250, images[0].shape
        assert images[-1].std() > 10, tag
    texts = meta["derived/architecture"][2]
    assert len(texts) == 2 and "| block | channels |" in texts[-1]
    assert summary["block_string"] in texts[-1] and "Notation:" in texts[-1]
    archs = sorted((tmp_path / "archs").glob("epoch_*.json"))
    assert [p.name for p in archs] == ["epoch_001.json", "epoch_002.json"]
    assert (tmp_path / "arch.json").is_file()
    pictures = sorted((tmp_path / "pictures").glob("epoch_*.png"))
    assert [p.name for p in pictures] == ["epoch_001.png", "epoch_002.png"]
    assert pictures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_custom_scalars_page_names_the_search_charts(micro, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    searcher = _searcher(micro, tmp_path, epochs=1)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    event = acc.Tensors(metadata.CONFIG_SUMMARY_TAG)[0]
    layout = layout_pb2.Layout.FromString(tf.make_ndarray(event.tensor_proto).item())
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["accuracy"] == [
        "weight_step/accuracy", "arch_step/accuracy", "eval/supernet_accuracy"
    ]  # fmt: skip
    assert charts["latency (ms)"] == ["latency/.*"]
    searcher.writer.close()


def test_foreign_run_dir_and_foreign_table_are_refused(micro, tmp_path):
    config = _config(micro, epochs=1)
    (tmp_path / "config.json").write_text(_config(micro, epochs=5).to_json())
    with pytest.raises(RunDirError, match="holds a run with another config"):
        run_search(config, tmp_path, log=lambda line: None)
    other = SearchConfig.from_dict({**config.to_dict(), "space": "tiny"})
    with pytest.raises(LatencyTableError, match="built for space 'micro'"):
        run_search(other, tmp_path / "other", log=lambda line: None)
    assert not (tmp_path / "other").exists()  # refused before anything was written


def test_a_run_dir_from_before_a_logging_key_still_counts_as_this_run(micro, tmp_path):
    from densenas_tf.search.run import prepare_run_dir

    config = _config(micro, epochs=1)
    older = config.to_dict()
    del older["summary_every_steps"]  # as runs recorded it before the key existed
    (tmp_path / "config.json").write_text(json.dumps(older))
    (tmp_path / "summary.json").write_text("{}")
    assert prepare_run_dir(tmp_path, config, overwrite=False) is True  # finished: not refused
    other_logging = SearchConfig.from_dict({**config.to_dict(), "summary_every_steps": 3})
    assert prepare_run_dir(tmp_path, other_logging, overwrite=False) is True
    other_maths = SearchConfig.from_dict({**config.to_dict(), "seed": 4})
    with pytest.raises(RunDirError, match="holds a run with another config"):
        prepare_run_dir(tmp_path, other_maths, overwrite=False)


def _search_cmd(micro, run_dir, *extra):
    config_file = micro["folder"] / "search.json"
    config_file.write_text(_config(micro, epochs=3, warmup_epochs=1).to_json())
    return [
        sys.executable,
        str(ROOT / "tools" / "search.py"),
        f"--config={config_file}",
        f"--run_dir={run_dir}",
        *extra,
    ]


def _final(run_dir):
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return summary, json.loads((Path(run_dir) / "arch.json").read_text())["block_string"]


def test_a_killed_run_resumes_to_the_same_result(micro, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(_search_cmd(micro, straight), check=True, capture_output=True, timeout=600)
    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        _search_cmd(micro, resumed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        state = resumed / "ckpt" / "checkpoint"
        if state.is_file() and "ckpt-6" in state.read_text():  # past warm-up, mid-run
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "summary.json").exists()
    result = subprocess.run(
        _search_cmd(micro, resumed), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr
    (a, arch_a), (b, arch_b) = _final(straight), _final(resumed)
    assert arch_a == arch_b
    for name in ("alpha_head", "alpha_stack", "beta"):
        np.testing.assert_allclose(a["arch_params"][name], b["arch_params"][name], atol=1e-5)
    # Running it again reports the finished run.
    again = subprocess.run(_search_cmd(micro, resumed), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "holds a finished search" in again.stderr


def test_mixed_precision_search_keeps_arch_params_and_latency_in_float32(micro, tmp_path):
    config = _config(micro, mixed_precision=True, summary_every_steps=1)
    summary = run_search(config, tmp_path / "run", log=lambda line: None).summary
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    # Against a float32 search from the same seed, step by step (8 warm-up
    # weight steps, then 2 architecture steps and 8 weight steps). Measured:
    # the first weight steps' cross-entropies 2e-4 to 1e-3 apart (relative;
    # float16 rounding in the forward, then in the gradients), and the first
    # architecture step's expected latency and latency term the same to 4e-7
    # (alpha and beta untouched by the warm-up, their softmaxes and the
    # latency in float32). Later steps drift apart (to 3 %) as the weights
    # and then alpha and beta do; the epochs' figures are held to 5 %.
    float32 = _config(micro, summary_every_steps=1)
    reference = run_search(float32, tmp_path / "float32", log=lambda line: None).summary
    mixed, _ = read_events(tmp_path / "run" / "tensorboard")
    plain, _ = read_events(tmp_path / "float32" / "tensorboard")
    for step in (1, 2, 3):
        assert mixed["weight_step/cross_entropy"][step] == pytest.approx(
            plain["weight_step/cross_entropy"][step], rel=5e-3
        ), step
    for tag in ("latency/step_expected_ms", "arch_step/latency_term"):
        assert mixed[tag][9] == pytest.approx(plain[tag][9], rel=1e-5), tag
    for ours, theirs in zip(summary["epoch_reports"], reference["epoch_reports"], strict=True):
        assert ours["weight_pass"]["ce"] == pytest.approx(theirs["weight_pass"]["ce"], rel=0.05)
        assert ours["supernet_eval"]["ce"] == pytest.approx(theirs["supernet_eval"]["ce"], rel=0.05)
        if theirs["arch_pass"] is not None:
            for key in ("ce", "latency_ms"):
                assert ours["arch_pass"][key] == pytest.approx(theirs["arch_pass"][key], rel=0.05)
    reports = summary["epoch_reports"]
    assert all(np.isfinite(r["weight_pass"]["ce"]) for r in reports)
    assert reports[-1]["weight_pass"]["loss_scale"] >= 1.0
    assert np.isfinite(reports[-1]["arch_pass"]["latency_ms"])
    alpha = np.asarray(summary["arch_params"]["alpha_head"])
    assert np.abs(alpha).max() > 1e-2  # moved well beyond its 1e-3 initial spread
    reader = tf.train.load_checkpoint(str(tmp_path / "run" / "ckpt"))
    dtypes = reader.get_variable_to_dtype_map()
    arch_keys = [k for k in dtypes if k.startswith("arch/")]
    assert arch_keys and all(dtypes[k] == tf.float32 for k in arch_keys)
    assert any(k.startswith("loss_scale/") for k in dtypes)

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = SuperNet.from_space(SearchSpace.from_config(MICRO_SPACE))
        images = tf.zeros([2, 28, 28, 1])
        sample = net.sample_ops(tf.constant([0, 1]), "two")
        logits = net(images, mode="two", sample=sample, training=True)
        assert net.compute_dtype == "float16" and logits.dtype == tf.float32
        assert all(v.dtype == "float32" for v in net.arch_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_dynamic_loss_scale_skips_overflow_and_grows_after_good_steps():
    from densenas_tf.nn.optimizers import DynamicLossScale

    scale = DynamicLossScale(initial_scale=8.0, growth_interval=2)
    grads = scale.unscale([tf.constant([8.0, 16.0]), None])
    np.testing.assert_allclose(grads[0].numpy(), [1.0, 2.0])
    assert grads[1] is None
    assert scale.all_finite(grads)
    assert not scale.all_finite([tf.constant([1.0, np.inf])])
    scale.update(False)
    assert float(scale.scale) == 4.0
    scale.update(True)
    assert float(scale.scale) == 4.0
    scale.update(True)
    assert float(scale.scale) == 8.0 and int(scale.good_steps) == 0


# ----- the search searches: warm-up, decisions, selection, latency -----------------------

# Two widths in each of two stages: the widest block of each (2 and 4) lies on
# the path with the fewest hops, 0 -> 2 -> 4 -> final, which near-uniform beta
# favours by hop count alone.
PLANTED_SPACE = {
    **MICRO_SPACE,
    "name": "planted",
    "blocks": {
        "widths": [8, 12, 16, 20, 24],
        "feature_map_sizes": [28, 14, 14, 7, 7],
        "stages": [0, 1, 1, 2, 2],
        "stacking_layers": [0, 1, 1, 1, 1],
    },
    "connections_per_stage": [2, 2, 2],
}
WIDEST = (2, 4)


def _planted_table(space, widest_ms, other_ms):
    """A table (of no real device) where the widest blocks' heads and stacking
    layers take widest_ms and every other op other_ms."""
    from densenas_tf.latency.table import space_keys

    keys = space_keys(space)
    planted = set()
    for edge, row in zip(space.head_edges, keys.head):
        if edge.dst in WIDEST:
            planted.update(k.key for k in row)
    for layer, row in zip(space.stacking_layers, keys.stack):
        if layer.block in WIDEST:
            planted.update(k.key for k in row if k is not None)
    return made_up_table(
        space,
        lambda k, key: widest_ms if key in planted else other_ms,
        device="planted (no device)",
    )


def _planted_search(tmp_path, widest_ms, other_ms, lam, epochs=4):
    space_file = write_space(tmp_path, PLANTED_SPACE)
    space = SearchSpace.from_config(PLANTED_SPACE)
    table_file = tmp_path / f"planted_lut_{widest_ms}_{other_ms}.json"
    _planted_table(space, widest_ms, other_ms).save(table_file)
    config = SearchConfig.from_dict(
        {
            "space": str(space_file),
            "latency_table": str(table_file),
            "objective": {"kind": "paper", "lam": lam, "tau_ms": 15.0},
            "data": {"train_limit": 640, "arch_fraction": 0.25},
            "batch_size": 32,
            "epochs": epochs,
            "warmup_epochs": 0,
            "weight_lr": 0.05,
            "alpha_lr": 0.05,
            "beta_lr": 0.2,
            "seed": 1,
            "deterministic": False,
        }
    )
    run_dir = tmp_path / f"run_{widest_ms}_{other_ms}_{lam}"
    return run_search(config, run_dir, log=lambda line: None).summary


@pytest.mark.slow
def test_a_planted_slow_widest_block_is_avoided_under_a_large_lambda(tmp_path):
    summary = _planted_search(tmp_path, widest_ms=1.0, other_ms=0.1, lam=3.0)
    path = summary["path"]
    assert not set(WIDEST) & set(path), path
    assert summary["path_margin"] > 0.05  # chosen by its margin, not by a tie
    assert summary["latency_table"]["check"]["checked"] is False  # no device to check against


@pytest.mark.slow
def test_cheap_widest_blocks_are_kept(tmp_path):
    """Under latency pressure the path keeps the cheap widest blocks; without
    it (lambda 0) the table has no say at all: a slow and a cheap table give
    the same search, bit for bit, whatever path the data then choose."""
    summary = _planted_search(tmp_path, widest_ms=0.01, other_ms=1.0, lam=3.0)
    assert set(WIDEST) <= set(summary["path"]), summary["path"]
    assert summary["path_margin"] > 0.05
    cheap = _planted_search(tmp_path, widest_ms=0.01, other_ms=1.0, lam=0.0, epochs=2)
    slow = _planted_search(tmp_path, widest_ms=1.0, other_ms=0.1, lam=0.0, epochs=2)
    assert cheap["arch_params"] == slow["arch_params"]
    assert (
        cheap["epoch_reports"][-1]["arch_pass"]["latency_ms"]
        != (slow["epoch_reports"][-1]["arch_pass"]["latency_ms"])
    )


def test_warm_up_ends_at_the_target_accuracy_and_the_best_archs_are_kept(micro, tmp_path):
    config = _config(micro, epochs=3, warmup_epochs=2, warmup_target_accuracy=0.01)
    logged = []
    summary = run_search(config, tmp_path / "early", log=logged.append).summary
    stages = [r["stage"] for r in summary["epoch_reports"]]
    assert stages == ["warm-up", "search", "search"]  # ended after 1 of at most 2 epochs
    assert summary["arch_stage_start_epoch"] == 2
    warmup = summary["warmup_end"]
    assert warmup["warmup_epochs"] == 1 and "reached the target 0.01" in warmup["reason"]
    first_eval = summary["epoch_reports"][0]["supernet_eval"]["acc"]
    assert warmup["supernet_accuracy"] == first_eval >= 0.01
    assert any("architecture stage begins at epoch 2" in line for line in logged)
    # The two search epochs' derived nets, best supernet accuracy first.
    searched = [r for r in summary["epoch_reports"] if r["stage"] == "search"]
    ranked = sorted(searched, key=lambda r: (-r["supernet_eval"]["acc"], -r["epoch"]))
    kept = [ArchSpec.from_json((tmp_path / "early" / f"arch_best{k}.json").read_text())
            for k in (1, 2)]  # fmt: skip
    assert [s.provenance["epoch"] for s in kept] == [r["epoch"] for r in ranked]
    assert [s.provenance["supernet_accuracy"] for s in kept] == [
        r["supernet_eval"]["acc"] for r in ranked
    ]
    assert [b["epoch"] for b in summary["best"]] == [r["epoch"] for r in ranked]
    # An unreachable target: the warm-up runs to its maximum and says so.
    config = _config(micro, epochs=2, warmup_epochs=1, warmup_target_accuracy=1.0)
    summary = run_search(config, tmp_path / "late", log=lambda line: None).summary
    assert [r["stage"] for r in summary["epoch_reports"]] == ["warm-up", "search"]
    assert "maximum of 1 warm-up epochs" in summary["warmup_end"]["reason"]
    assert "below the target 1.0" in summary["warmup_end"]["reason"]


def test_near_ties_are_flagged_in_the_arch_provenance(micro, tmp_path):
    # A threshold above every possible margin makes every decision a near-tie.
    result = run_search(_config(micro, tie_threshold=1e6), tmp_path / "run", log=lambda line: None)
    summary = result.summary
    arch = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert result.arch == ArchSpec.from_json(json.dumps(arch))  # the net run_search hands back
    # A finished run is reported, not searched again: the same net and summary.
    again = run_search(_config(micro, tie_threshold=1e6), tmp_path / "run", log=lambda line: None)
    assert again.arch == result.arch and again.summary == json.loads(
        (tmp_path / "run" / "summary.json").read_text()
    )
    info = arch["provenance"]
    assert info["tie_threshold"] == 1e6
    assert len(info["near_ties"]) == len(info["op_margins"]) + 1  # every op and the path
    assert summary["near_ties"] == info["near_ties"]
    assert info["runner_up_path"] != info["path"]


def test_same_command_twice_derives_identical_arch_json(micro, tmp_path):
    config_file = micro["folder"] / "determinism.json"
    config_file.write_text(_config(micro, epochs=2, warmup_epochs=1, deterministic=True).to_json())
    outputs = []
    for name in ("first", "second"):
        command = [sys.executable, str(ROOT / "tools" / "search.py"),
                   f"--config={config_file}", f"--run_dir={tmp_path / name}"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(
            (
                (tmp_path / name / "arch.json").read_bytes(),
                json.loads((tmp_path / name / "summary.json").read_text())["arch_params"],
            )
        )
    assert outputs[0][0] == outputs[1][0]
    assert outputs[0][1] == outputs[1][1]  # bit for bit


def test_a_table_of_this_machine_that_misses_whole_nets_is_refused(micro, tmp_path):
    from densenas_tf.latency.check import check_table_here
    from densenas_tf.latency.measure import device_description

    space = SearchSpace.from_config(MICRO_SPACE)
    table = LatencyTable.load(micro["table"])
    assert table.provenance["device"] == device_description()
    for entry in table.entries.values():  # three times too slow
        entry.median_ms *= 3.0
    table.overhead_ms *= 3.0
    scaled = tmp_path / "scaled.json"
    table.save(scaled)
    with pytest.raises(LatencyTableError, match=r"mean error .* densenas-build-lut --space=micro"):
        check_table_here(space, table, str(scaled), runs=10, log=lambda line: None)
    # The search refuses it before anything trains, and takes it when told not to check.
    config = _config(micro, latency_table=str(scaled), latency_check=True)
    with pytest.raises(LatencyTableError, match="no longer describes this machine"):
        run_search(config, tmp_path / "refused", log=lambda line: None)
    assert not (tmp_path / "refused" / "ckpt").exists()
    # A table of another device is used as it is, and the run says whose latency it is.
    table.provenance["device"] = "a phone"
    logged = []
    result = check_table_here(space, table, "phone.json", log=logged.append)
    assert result["checked"] is False and "measured on 'a phone'" in logged[0]


@pytest.mark.parametrize("graph_steps", [True, False])
@pytest.mark.parametrize("undrawn_ops_step", [False, True])
def test_undrawn_ops_move_only_under_the_pytorch_1_0_rule(
    micro, tmp_path, undrawn_ops_step, graph_steps
):
    """Op 0 of every layer is drawn (its weights gain momentum), then op 1: op 0's
    weights stay put, unless undrawn_ops_step (PyTorch 1.0-1.2's zeroed
    gradients) lets momentum and weight decay move them. Traced steps too,
    where the switch hands undrawn ops zero gradients, not None."""
    from densenas_tf.nn.supernet import OpSample

    searcher = _searcher(
        micro, tmp_path, undrawn_ops_step=undrawn_ops_step, graph_steps=graph_steps
    )
    assert searcher.steps.traced == graph_steps
    net = searcher.net
    heads, stacks = len(net.space.head_edges), len(net.space.stacking_layers)

    def draw(op):
        return OpSample(tf.fill([heads], op), tf.fill([stacks], op))

    batch = next(searcher._batches(searcher.weight_data, 0, 1, 0))
    kernel = net.dense_blocks[0].heads[0].candidates[0].op_layers["dw_conv"].kernel
    searcher.steps.weight_step(batch, draw(0))
    before = np.array(kernel.numpy())
    searcher.steps.weight_step(batch, draw(1))
    moved = not np.array_equal(before, kernel.numpy())
    assert moved == undrawn_ops_step


# ----- data against the space, checkpoints, the objective --------------------------------


def test_a_space_that_does_not_fit_the_data_is_refused_before_anything_is_written(tmp_path):
    from densenas_tf.data.sources import DataError

    tiny = yaml.safe_load((ROOT / "configs" / "spaces" / "tiny.yaml").read_text())
    four_classes = {**MICRO_SPACE, "name": "micro4", "num_classes": 4}
    expected = {
        "tiny": "the space 'tiny' takes 16x16x1 images in 4 classes but the search data "
        "(fashion_mnist) are 28x28x1 images in 10 classes; search a space with "
        "input_shape: [28, 28, 1] and num_classes: 10 (e.g. --override=space=fashion_mnist)",
        "micro4": "the space 'micro4' takes 28x28x1 images in 4 classes but the search data "
        "(fashion_mnist) are 28x28x1 images in 10 classes; search a space with "
        "input_shape: [28, 28, 1] and num_classes: 10 (e.g. --override=space=fashion_mnist)",
    }
    for config in (tiny, four_classes):
        space_file = write_space(tmp_path, config)
        table_file = tmp_path / f"{config['name']}_lut.json"
        _planted_table(SearchSpace.from_config(config), 0.1, 0.1).save(table_file)
        search = SearchConfig.from_dict(
            {
                "space": str(space_file),
                "latency_table": str(table_file),
                "data": {"train_limit": 320, "arch_fraction": 0.2},
                "batch_size": 32,
                "latency_check": False,
            }
        )
        run_dir = tmp_path / f"run_{config['name']}"
        with pytest.raises(DataError) as refused:
            run_search(search, run_dir, log=lambda line: None)
        assert str(refused.value) == expected[config["name"]]
        assert not run_dir.exists()


def test_streamed_data_that_do_not_fit_the_space_name_the_command_that_makes_one():
    from types import SimpleNamespace

    from densenas_tf.data.sources import DataError
    from densenas_tf.search.run import check_search_data
    from densenas_tf.space.spaces import load_space

    space = load_space("fashion_mnist")
    split = SimpleNamespace(data=SimpleNamespace(input_shape=(40, 40, 3), num_classes=5))
    for data, made_from in (
        ({"image_folder": "/data/mine"}, "--image_folder=/data/mine"),
        ({"tfds_name": "my_set"}, "--input_size=40 --channels=3 --num_classes=5"),
    ):
        config = SearchConfig.from_dict({"data": data})
        with pytest.raises(DataError) as refused:
            check_search_data(space, config, split)
        message = str(refused.value)
        assert "are 40x40x3 images in 5 classes" in message, message
        assert (
            f"make a space for them: densenas-make-space --like=fashion_mnist {made_from} "
            "--out=my_space.yaml, then search it with --override=space=my_space.yaml "
            "--latency_table=TABLE.json"
        ) in message, message


def _two_checkpoints(micro, run_dir):
    """A warm-up weight pass of 8 steps, checkpointed every 3: ckpt-3 and ckpt-6."""
    searcher = _searcher(micro, run_dir, epochs=1)
    searcher._run_pass(1, epoch=0)
    names = sorted(Path(p).name for p in searcher.manager.checkpoints)
    assert names == ["ckpt-3", "ckpt-6"]
    return run_dir / "ckpt"


def _corrupt(checkpoint_dir, step):
    """Flips 64 bytes in the middle of checkpoint step's data file."""
    data = next(checkpoint_dir.glob(f"ckpt-{step}.data-*"))
    blob = bytearray(data.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(b ^ 0xFF for b in blob[middle : middle + 64])
    data.write_bytes(bytes(blob))


def _state(searcher, folder):
    """Every value the searcher checkpoints, by checkpoint key."""
    reader = tf.train.load_checkpoint(searcher.checkpoint.write(str(folder / "state")))
    return {
        k: reader.get_tensor(k)
        for k in reader.get_variable_to_shape_map()
        if k.endswith("/.ATTRIBUTES/VARIABLE_VALUE") and not k.startswith("save_counter")
    }


def test_a_corrupt_latest_checkpoint_resumes_from_the_one_before(micro, tmp_path):
    ckpt = _two_checkpoints(micro, tmp_path / "run")
    reference = _searcher(micro, tmp_path / "reference", epochs=1)
    reference.checkpoint.restore(str(ckpt / "ckpt-3")).assert_existing_objects_matched()
    _corrupt(ckpt, 6)
    logged = []
    searcher = _searcher(micro, tmp_path / "run", epochs=1)
    searcher.log = logged.append
    assert searcher.restore()
    assert (int(searcher.global_step), int(searcher.phase), int(searcher.batch_in_phase)) == (
        3,
        1,
        3,
    )
    state, expected = _state(searcher, tmp_path / "a"), _state(reference, tmp_path / "b")
    assert state.keys() == expected.keys()
    assert [k for k, v in expected.items() if not np.array_equal(state[k], v)] == []
    assert logged[0].startswith(f"cannot restore {ckpt / 'ckpt-6'}: ") and "hecksum" in logged[0]
    assert logged[1] == (
        f"restored {ckpt / 'ckpt-3'}, the newest readable checkpoint (global step 3); the "
        f"unreadable newer ones were moved to {ckpt / 'unreadable'}"
    )
    assert (
        sorted(p.name for p in (ckpt / "unreadable").iterdir())[0] == "ckpt-6.data-00000-of-00001"
    )
    assert tf.train.latest_checkpoint(str(ckpt)) == str(ckpt / "ckpt-3")
    # The run goes on from step 3 to the end of the epoch; the manager keeps its last two.
    _, summary = searcher.run()
    assert summary["global_steps"] == 8
    assert sorted(Path(p).name for p in searcher.manager.checkpoints) == ["ckpt-6", "ckpt-8"]
    assert not list(ckpt.glob("ckpt-3.*"))


def test_a_lost_index_still_resumes_and_no_readable_checkpoint_is_refused(micro, tmp_path):
    ckpt = _two_checkpoints(micro, tmp_path)
    (ckpt / "checkpoint").unlink()
    logged = []
    searcher = _searcher(micro, tmp_path, epochs=1)
    searcher.log = logged.append
    assert searcher.restore()
    assert int(searcher.global_step) == 6
    assert logged[0] == (
        f"{ckpt} has no index file (checkpoint) but holds checkpoint files: looking at those"
    )
    assert logged[1].startswith(f"resuming from {ckpt / 'ckpt-6'}: epoch 1, weight pass, batch 6")
    assert tf.train.latest_checkpoint(str(ckpt)) == str(ckpt / "ckpt-6")  # the index rewritten
    assert [Path(p).name for p in searcher.manager.checkpoints] == ["ckpt-3", "ckpt-6"]
    # No readable checkpoint at all: refused, never a silent start from step 0.
    _corrupt(ckpt, 3)
    _corrupt(ckpt, 6)
    before = sorted(p.name for p in ckpt.iterdir())
    with pytest.raises(RunDirError) as refused:
        _searcher(micro, tmp_path, epochs=1).restore()
    message = str(refused.value)
    assert message.startswith(f"{ckpt} holds checkpoint files but none is readable (ckpt-6: ")
    assert "; ckpt-3: " in message
    assert message.endswith(f"delete {tmp_path} (or move it away) to start this search over")
    assert sorted(p.name for p in ckpt.iterdir()) == before  # nothing moved or deleted


@pytest.mark.parametrize(
    "objective,by_hand",
    [
        # 0.3 * ln 0.8 / ln 15 (paper eq. 8)
        (Objective("paper", lam=0.3, tau_ms=15.0), 0.3 * -0.22314355131 / 2.70805020110),
        # 0.5 * max(0, 0.8 / 0.01 - 1)
        (Objective("target", lam=0.5, target_ms=0.01), 0.5 * 79.0),
        # 1.7 * ((0.8 / 0.5) ** 0.6 - 1), 1.6 ** 0.6 = exp(0.6 * ln 1.6)
        (Objective("proxyless", target_ms=0.5, beta=0.6), 1.7 * (1.32578160694 - 1.0)),
        # 0.4 * ln(0.8 / 0.5): the controller's form at its starting weight
        (Objective("budget", lam=0.4, target_ms=0.5), 0.4 * 0.47000362924),
        # 0.4 * |0.8 / 2.0 - 1| (TuNAS's absolute value)
        (Objective("budget", lam=0.4, target_ms=2.0, steer="absolute"), 0.4 * 0.6),
    ],
    ids=["paper", "target", "proxyless", "budget_controlled", "budget_absolute"],
)
def test_loss_and_replica_shares_come_from_the_one_latency_term(objective, by_hand):
    ce, latency = tf.constant(1.7), tf.constant(0.8)
    term = float(objective.latency_term(ce, latency))
    assert term == pytest.approx(by_hand, rel=1e-5)
    assert float(objective.loss(ce, latency)) == pytest.approx(1.7 + term, rel=1e-6)
    # Two replicas, each with its share of the cross-entropy: the shares sum to the term.
    shares = [
        objective.latency_term(part, latency, 2) for part in (tf.constant(0.5), tf.constant(1.2))
    ]
    assert float(sum(shares)) == pytest.approx(term, rel=1e-6)


def _expected_latency_by_hand(config, table_file, arch, sample) -> float:
    """Paper eqs. 5-7 for the micro space, from its config, a table file, the
    architecture parameters and a two-op draw: each layer's latency the
    weighted sum of its ops' table entries (eq. 5; the weights the softmax
    over the drawn pair), a head layer's weighted by its edge's probability
    (eq. 6; p = softmax of beta over the source block's edges), chained along
    each path (a block's layers count as far as the block is reached: the
    product of the path's edge probabilities), summed (eq. 7); the stem, the
    classifier and the per-run overhead once. Every entry counts less the
    overhead, as the table's format says."""
    table = json.loads(Path(table_file).read_text())
    overhead = table["overhead_ms"]

    def ms(key):
        return max(table["entries"][key]["median_ms"] - overhead, 0.0)

    def mixed(row, drawn, keys):
        pair = np.exp(row[drawn]) / np.exp(row[drawn]).sum()
        return sum(w * (0.0 if keys[k] is None else ms(keys[k])) for w, k in zip(pair, drawn))

    space = SearchSpace.from_config(config)  # the rows of alpha and beta, in the code's order
    sizes, widths = config["blocks"]["feature_map_sizes"], config["blocks"]["widths"]
    final, last = config["final_conv_width"], len(widths)
    heads, stacks = np.asarray(sample.head), np.asarray(sample.stack)
    edge_ms, edge_p = {}, {}
    for edge in space.edges:
        i, j = edge.src, edge.dst
        siblings = [e.index for e in space.edges if e.src == i]
        edge_p[i, j] = np.exp(arch["beta"][edge.index]) / np.exp(arch["beta"][siblings]).sum()
        if j == last:
            edge_ms[i, j] = ms(f"final_conv/i{sizes[i]}x{sizes[i]}x{widths[i]}/o{final}")
        else:
            row = space.head_row(edge)
            keys = [
                f"{op}/i{sizes[i]}x{sizes[i]}x{widths[i]}/s{sizes[i] // sizes[j]}/o{widths[j]}"
                for op in config["head_ops"]
            ]
            edge_ms[i, j] = mixed(arch["alpha_head"][row], heads[row], keys)
    block_ms = dict.fromkeys(range(last), 0.0)
    for layer in space.stacking_layers:
        b, s = layer.block, sizes[layer.block]
        keys = [
            None if op == "skip" else f"{op}/i{s}x{s}x{widths[b]}/s1/o{widths[b]}"
            for op in config["stacking_ops"]
        ]
        block_ms[b] += mixed(arch["alpha_stack"][layer.index], stacks[layer.index], keys)

    def paths(node):
        if node == last:
            return [[last]]
        return [[node, *rest] for i, j in edge_p if i == node for rest in paths(j)]

    total = 0.0
    for path in paths(0):
        hops = list(zip(path, path[1:]))
        probability = np.prod([edge_p[hop] for hop in hops])
        total += probability * sum(block_ms[b] + edge_ms[b, j] for b, j in hops)
    h, w, c = config["input_shape"]
    stem = config["stem"]
    stem_key = f"stem/c{stem['conv_width']}s{stem['stride']}+{stem['op']}/i{h}x{w}x{c}/o{widths[0]}"
    classifier_key = f"classifier/i{sizes[-1]}x{sizes[-1]}x{final}/o{config['num_classes']}"
    return overhead + ms(stem_key) + ms(classifier_key) + total


def test_the_arch_step_takes_its_latency_term_from_the_objective(micro, tmp_path):
    searcher = _searcher(micro, tmp_path)
    arch = searcher.net.arch_numpy()  # alpha and beta before the step
    batch = next(searcher._batches(searcher.arch_data, 0, 0, 0))
    sample = searcher._sample("two")
    values = {k: float(v) for k, v in searcher.steps.arch_step(batch, sample).items()}
    term = float(searcher.steps.objective.latency_term(values["ce"], values["latency_ms"]))
    assert values["loss"] - values["ce"] == pytest.approx(term, rel=1e-5)
    # By hand: the expected latency of the draw (eqs. 5-7) and the paper's
    # term of it (eq. 8, lambda 0.3 and tau 15 ms as _config sets them).
    latency = _expected_latency_by_hand(MICRO_SPACE, micro["table"], arch, sample)
    assert values["latency_ms"] == pytest.approx(latency, rel=1e-5)
    by_hand = 0.3 * np.log(latency) / np.log(15.0)
    assert values["loss"] - values["ce"] == pytest.approx(by_hand, rel=1e-4, abs=1e-6)

    class Flat(Objective):
        """A latency term of 0.75 whatever the latency."""

        def latency_term(self, cross_entropy, latency_ms, num_replicas=1, weight=None):
            return tf.constant(0.75) / num_replicas

    searcher.steps.objective = Flat()
    values = {k: float(v) for k, v in searcher.steps.arch_step(batch, sample).items()}
    assert values["loss"] - values["ce"] == pytest.approx(0.75, abs=1e-5)


def test_the_budget_controller_raises_the_weight_above_the_budget_and_lowers_it_below(
    micro, tmp_path
):
    """Steered by the expected latency: each architecture step uses the weight
    in force (reported as ``latency_weight``, the term ``w * ln(lat / T)``) and
    then multiplies it by ``exp(gain * (lat / T - 1))``, within [lam_min, lam_max]."""
    objective = {"kind": "budget", "target_ms": 1.0, "lam": 0.2, "gain": 0.1, "steer": "expected"}
    searcher = _searcher(micro, tmp_path, objective=objective)
    batch = next(searcher._batches(searcher.arch_data, 0, 0, 0))
    latency = None
    for target in (None, "below", "above"):
        if target is not None:  # a budget below (above) the supernet's latency
            factor = 0.5 if target == "below" else 2.0
            searcher.steps.objective = Objective.from_config(
                {**objective, "target_ms": latency * factor}
            )
        before = float(searcher.steps.latency_weight)
        values = {
            k: float(v) for k, v in searcher.steps.arch_step(batch, searcher._sample("two")).items()
        }
        latency, used = values["latency_ms"], values["latency_weight"]
        assert used == pytest.approx(before)
        budget_ms = searcher.steps.objective.target_ms
        assert values["loss"] - values["ce"] == pytest.approx(
            used * np.log(latency / budget_ms), rel=1e-4, abs=1e-6
        )
        after = float(searcher.steps.latency_weight)
        expected = np.clip(used * np.exp(0.1 * (latency / budget_ms - 1.0)), 1e-3, 10.0)
        assert after == pytest.approx(expected, rel=1e-5)
        if target == "below":
            assert after > used  # the latency is above the budget: more weight
        if target == "above":
            assert after < used
    # The weight is part of the checkpoint: a restored searcher goes on from it.
    searcher._save()
    again = _searcher(micro, tmp_path, objective=objective)
    assert again.restore()
    assert float(again.steps.latency_weight) == pytest.approx(after)


def test_the_derived_controller_steers_by_the_latency_of_the_net_derived_now(micro, tmp_path):
    """Steered by the derived net (the default): the step leaves the weight
    alone, and the searcher then adds gain * (d / T - 1), d the table's latency
    of the net the paper's derivation gives at that moment, down through zero
    when the net is faster than the budget."""
    from densenas_tf.space.derive import derive_arch

    objective = {"kind": "budget", "target_ms": 0.05, "lam": 0.2, "gain": 0.1}
    searcher = _searcher(micro, tmp_path, objective=objective)
    assert searcher.steps.objective.steer == "derived"
    batch = next(searcher._batches(searcher.arch_data, 0, 0, 0))
    values = searcher.steps.arch_step(batch, searcher._sample("two"))
    assert float(values["latency_weight"]) == pytest.approx(0.2)
    assert float(searcher.steps.latency_weight) == pytest.approx(0.2)  # not moved in the step
    derived = LatencyTable.load(micro["table"]).predicted_ms(
        derive_arch(searcher.space, **searcher.net.arch_numpy())
    )
    # A budget of half the net's latency (the table is measured here, so the
    # net's latency is only known now): the weight grows by gain * (2 - 1).
    searcher.steps.objective = Objective.from_config({**objective, "target_ms": derived / 2})
    assert searcher._steer_by_derived_net() == pytest.approx(derived, rel=1e-9)
    after = float(searcher.steps.latency_weight)
    assert after == pytest.approx(0.2 + 0.1, rel=1e-5)
    # A budget ten times the net's latency: the weight falls below zero.
    searcher.steps.objective = Objective.from_config({**objective, "target_ms": derived * 10})
    for _ in range(4):
        searcher._steer_by_derived_net()
    assert float(searcher.steps.latency_weight) == pytest.approx(after - 4 * 0.1 * 0.9, rel=1e-5)
    assert float(searcher.steps.latency_weight) < 0


def test_a_budget_search_derives_within_the_budget_and_reports_it(micro, tmp_path):
    """A search with a budget: each epoch's net and the final one predict at
    most the budget; the reports, the summary and TensorBoard carry the budget,
    the expected latency and the latency weight."""
    space = SearchSpace.from_config(MICRO_SPACE)
    table = LatencyTable.load(micro["table"])
    from densenas_tf.latency.expected import latency_costs
    from densenas_tf.space import budget

    costs = latency_costs(space, table)
    zeros = dict(
        alpha_head=np.zeros((len(space.head_edges), len(space.head_ops))),
        alpha_stack=np.zeros((len(space.stacking_layers), len(space.stacking_ops))),
        beta=np.zeros(len(space.edges)),
    )
    front = budget.pareto_architectures(space, costs, **zeros)
    target = front[0].latency_ms + 0.3 * (front[-1].latency_ms - front[0].latency_ms)
    config = _config(micro, objective={"kind": "budget", "target_ms": target, "lam": 0.3})
    logged = []
    summary = run_search(config, tmp_path / "run", log=logged.append).summary
    assert summary["predicted_latency_ms"] <= target + 1e-9
    assert summary["budget"]["target_ms"] == pytest.approx(target)
    assert summary["budget"]["predicted_ms"] == pytest.approx(summary["predicted_latency_ms"])
    for report in summary["epoch_reports"]:
        assert report["predicted_latency_ms"] <= target + 1e-9
        assert report["budget_ms"] == pytest.approx(target)
        assert np.isfinite(report["latency_weight"])
    searched = summary["epoch_reports"][-1]
    assert searched["stage"] == "search"
    assert searched["latency_weight"] != pytest.approx(0.3)  # the controller moved it
    assert any(f"budget {target:.3f} ms" in line for line in logged)
    scalars, _ = read_events(tmp_path / "run" / "tensorboard")
    assert scalars["latency/budget_ms"] == {
        step: pytest.approx(target) for step in scalars["latency/budget_ms"]
    }
    assert len(scalars["latency/weight"]) > len(summary["epoch_reports"])  # per step too
    assert scalars["latency/step_derived_ms"]  # what the controller steered by, per step


def test_a_finished_search_is_re_derived_under_any_budget_without_searching(micro, tmp_path):
    """tools/derive.py --target_ms on a finished search (paper objective): each
    budget gives a net predicting at most it on the run's own table, none is
    the paper's when the budget is below the paper's net, and a budget below
    the fastest net is refused naming the least budget."""
    from densenas_tf.search.run import derive_from_checkpoint

    run_dir = tmp_path / "run"
    summary = run_search(_config(micro), run_dir, log=lambda line: None).summary
    table = LatencyTable.load(run_dir / "latency_table.json")
    paper = derive_from_checkpoint(run_dir)
    assert "budget" not in paper.provenance
    assert table.predicted_ms(paper) == pytest.approx(summary["predicted_latency_ms"])
    paper_ms = summary["predicted_latency_ms"]
    from densenas_tf.latency.expected import latency_costs
    from densenas_tf.space import budget

    space = SearchSpace.from_config(MICRO_SPACE)
    arrays = {k: np.asarray(v) for k, v in summary["arch_params"].items()}
    front = budget.pareto_architectures(space, latency_costs(space, table), **arrays)
    low, high = front[0].latency_ms, front[-1].latency_ms
    targets = [low + f * (high - low) for f in (0.1, 0.5, 0.9)]
    predicted = []
    for target in targets:
        spec = derive_from_checkpoint(run_dir, target_ms=target)
        assert spec.provenance["predicted_latency_ms"] == pytest.approx(table.predicted_ms(spec))
        assert table.predicted_ms(spec) <= target + 1e-9
        assert spec.provenance["budget"]["paper_derivation_ms"] == pytest.approx(paper_ms)
        predicted.append(table.predicted_ms(spec))
    assert predicted == sorted(predicted)
    command = [sys.executable, str(ROOT / "tools" / "derive.py"), f"--run_dir={run_dir}"]
    result = subprocess.run(
        [*command, f"--target_ms={targets[1]}"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert ArchSpec.from_json(result.stdout).to_block_string() == (
        derive_from_checkpoint(run_dir, target_ms=targets[1]).to_block_string()
    )
    assert f"budget {targets[1]:.4f} ms: predicted" in result.stderr
    result = subprocess.run(
        [*command, "--target_ms=0.0001"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "no architecture of space 'micro' fits a budget of 0.0001 ms" in result.stderr
    assert "give a budget of at least" in result.stderr
    assert "Traceback" not in result.stderr


def test_search_binary_runs_mirrored_on_two_logical_cpus(micro, tmp_path):
    """The strategy flags of tools/search.py (the strategy maths are tested
    against one device in tests/test_strategy.py)."""
    run_dir = tmp_path / "mirrored"
    command = _search_cmd(
        micro, run_dir, "--strategy=mirrored", "--logical_cpus=2", "--override=epochs=2"
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["replicas"] == 2
    assert summary["arch_replica_max_abs_diff"] == 0.0  # the replicas' copies agree
    assert summary["epochs"] == 2 and len(summary["epoch_reports"]) == 2


def test_a_table_missing_keys_is_refused_with_the_space_file_in_the_command(micro, tmp_path):
    data = json.loads(Path(micro["table"]).read_text())
    data["entries"].pop(sorted(data["entries"])[0])
    partial = tmp_path / "partial_lut.json"
    partial.write_text(json.dumps(data))
    config = _config(micro, latency_table=str(partial))
    with pytest.raises(LatencyTableError, match="lacks 1 entry") as refused:
        run_search(config, tmp_path / "run", log=lambda line: None)
    assert f"--space={micro['space']}" in str(refused.value)  # a command that works as given
    assert "SPACE_FILE" not in str(refused.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("weight_sharing", ["none", "nested"])
def test_traced_steps_compute_what_the_eager_steps_compute(
    micro, tmp_path, weight_sharing, smooth_relu6
):
    """graph_steps (one traced graph per kind of step, the drawn ops picked by
    tf.switch_case) against the eager steps (each op dispatched from Python),
    from the same weights on the same batches and draws: the same losses and
    accuracies, weights, batch-norm statistics, momentum buffers, alpha and
    beta after weight, architecture and evaluation steps (float tolerance).

    With ReLU6 smoothed (conftest.smooth_relu6): at its kinks the two paths'
    1e-7 rounding differences flipped an element now and then, and the alpha
    and beta gradients came out up to 3 % of their largest apart (one CI run
    in several). Smoothed, the gradients agree within 3e-6 of the largest and
    alpha and beta within 1.1e-5 of an Adam step, over both weight sharings."""
    searchers = []
    for graph in (True, False):
        config = _config(micro, graph_steps=graph, weight_sharing=weight_sharing)
        space = SearchSpace.from_config(MICRO_SPACE)
        weight, arch = load_search_data(config)
        keras.utils.set_random_seed(config.seed)
        net = SuperNet.from_space(space, arch_init_seed=config.seed, weight_sharing=weight_sharing)
        table = LatencyTable.load(micro["table"])
        run_dir = tmp_path / ("graph" if graph else "eager")
        searchers.append(Searcher(config, net, table, weight, arch, run_dir, log=lambda line: None))
    traced, eager = searchers
    assert traced.steps.traced and not eager.steps.traced
    _assert_same(_values(traced.net.variables), _values(eager.net.variables))
    weight_batch = next(traced._batches(traced.weight_data, 0, 1, 0))
    arch_batch = next(traced._batches(traced.arch_data, 0, 0, 0))

    arch_params = {id(v) for v in traced.net.arch_variables}
    arch_slots = {
        id(v)
        for v in [*traced.steps.alpha_optimizer.variables, *traced.steps.beta_optimizer.variables]
    }
    arch_step = config.alpha_lr
    assert config.beta_lr == arch_step

    def state(searcher):
        return [
            *searcher.net.variables,
            *searcher.steps.weight_optimizer.buffers,
            *searcher.steps.alpha_optimizer.variables,
            *searcher.steps.beta_optimizer.variables,
        ]

    def close(a, b, variables):
        for x, y, v in zip(a, b, variables):
            name = getattr(v, "path", v.name)
            if id(v) in arch_slots:
                # Each step starts from the same state, so Adam's momentum differs by
                # (1 - beta_1) times the gradients' difference, its velocity by their
                # squares': the gradients of alpha and beta, compared to 1e-4 of the
                # largest (they are small differences of large terms, training-mode
                # batch norms after the mixing, summed in other orders by the paths).
                atol = 1e-4 * float(np.max(np.abs(y))) + 1e-12
                np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=name)
            elif id(v) in arch_params:
                # Adam moves each by lr * m/sqrt(v), about lr whatever the gradient's
                # size: compared to 1e-3 of one step (a wrong or sign-flipped
                # gradient moves it by up to two).
                np.testing.assert_allclose(x, y, rtol=0, atol=1e-3 * arch_step, err_msg=name)
            else:  # weights, statistics and momentum buffers: float noise only
                np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5, err_msg=name)

    for k in range(3):
        for policy, step_name, batch in (
            ("softmax", "weight_step", weight_batch),
            ("two", "arch_step", arch_batch),
            ("uniform", "eval_step", arch_batch),
        ):
            sample = traced.net.sample_ops(tf.constant([5, k], tf.int64), policy)
            out = [getattr(s.steps, step_name)(batch, sample) for s in searchers]
            assert sorted(out[0]) == sorted(out[1])
            for key in out[0]:
                np.testing.assert_allclose(float(out[0][key]), float(out[1][key]), rtol=2e-4)
            close(_values(state(traced)), _values(state(eager)), state(traced))
            assert smooth_relu6  # the smooth clip is what ran
            # Each step from the same state: float-order differences do not pile up.
            for mine, theirs in zip(state(traced), state(eager)):
                mine.assign(theirs)
    assert int(traced.steps.weight_optimizer.iterations) == 3
    # Each kind of step was traced once, whatever the draw.
    assert [fn.experimental_get_tracing_count() for fn in traced.steps.traced_steps] == [1, 1, 1]


@pytest.mark.slow
def test_a_resumed_search_refuses_a_changed_table_or_records_the_change(tmp_path):
    """The table a search optimised is the record in its run_dir: a resume
    against a changed table file is refused, naming the changed entry, and the
    record is kept; with accept_table_change the run goes on, keeps the old
    table under the epoch it held to and lists the change in its summary."""
    from densenas_tf.search.run import TABLE_CHANGES

    space = SearchSpace.from_config(MICRO_SPACE)
    table = made_up_table(space, lambda k, key: 0.01 + 0.001 * (k % 7))
    table_file = tmp_path / "table.json"
    table.save(table_file)
    config = short_search_config(write_space(tmp_path, MICRO_SPACE), table_file, 128, 0.25)
    run_dir = tmp_path / "run"
    run_search(config, run_dir, log=lambda line: None)
    record = run_dir / "latency_table.json"
    original = record.read_text()
    (run_dir / "summary.json").unlink()  # as if stopped before its end
    key = sorted(table.entries)[3]
    changed = LatencyTable.load(table_file)
    changed.entries[key] = dataclasses.replace(changed.entries[key], median_ms=0.5)
    changed.save(table_file)
    with pytest.raises(LatencyTableError, match="has changed since the search") as refused:
        run_search(config, run_dir, log=lambda line: None)
    message = str(refused.value)
    assert f"1 entries differ, e.g. {key}:" in message and "-> 0.5000 ms" in message
    assert "--accept_table_change" in message and f"cp {record} {table_file}" in message
    assert record.read_text() == original and not (run_dir / TABLE_CHANGES).exists()

    summary = run_search(config, run_dir, log=lambda line: None, accept_table_change=True).summary
    kept = run_dir / "latency_table.until_epoch2.json"
    assert kept.read_text() == original
    assert LatencyTable.load(record).entries[key].median_ms == 0.5
    (change,) = summary["latency_table"]["changes"]
    assert change["from_epoch"] == 3 and change["entries_changed"] == 1
    assert change["previous"] == kept.name and change["table"] == str(table_file)
