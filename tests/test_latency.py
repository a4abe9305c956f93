"""Latency tables, expected latency and objectives."""

import copy
import json
import shlex

import numpy as np
import pytest
import tensorflow as tf
from helpers import made_up_table

from densenas_tf.latency import table as latency
from densenas_tf.latency.expected import ExpectedLatency
from densenas_tf.latency.report import spearman
from densenas_tf.latency.table import LatencyTable, LatencyTableError, space_keys
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search.objectives import Objective
from densenas_tf.space.arch_spec import load_arch
from densenas_tf.space.derive import arch_from_path
from densenas_tf.space.spaces import load_space


def synthetic_table(space, seed=0, overhead_ms=0.05):
    """Distinct made-up timings, seeded: for checking arithmetic, not for measuring anything."""
    rng = np.random.default_rng(seed)
    return made_up_table(
        space,
        lambda k, key: overhead_ms + rng.uniform(0.1, 2.0),
        overhead_ms=overhead_ms,
        std_ms=0.01,
        count=10,
        versions={"tensorflow_version": "x"},
    )


# ----- keys -------------------------------------------------------------------------
def test_keys_are_canonical_and_shared(imagenet_space):
    assert latency.op_key("mbconv_k3_e6", 56, 24, 2, 32).key == "mbconv_k3_e6/i56x56x24/s2/o32"
    assert latency.op_key("skip", 14, 64, 1, 64) is None
    keys = space_keys(imagenet_space)
    # The three stacking layers of a block share the entries of their ops.
    rows = imagenet_space.stacking_rows(5)
    assert keys.stack[rows[0]] == keys.stack[rows[1]] == keys.stack[rows[2]]
    pieces = sum(len(r) for r in keys.head) + sum(1 for r in keys.stack for k in r if k) + 5
    assert len(keys.all_keys()) < pieces
    # 51 head edges x 6 ops, but edges with the same source and width share keys.
    assert len({k.key for row in keys.head for k in row}) == 51 * 6
    assert len({k.key for row in keys.stack for k in row if k}) == 13 * 6
    assert len(keys.all_keys()) == 51 * 6 + 13 * 6 + 1 + 3 + 1


def test_reference_nets_use_keys_of_the_space(imagenet_space):
    keys = set(space_keys(imagenet_space).all_keys())
    for name in ("densenas_a", "densenas_b", "densenas_c"):
        assert {k.key for k in latency.arch_keys(load_arch(name))} <= keys
    assert not {k.key for k in latency.arch_keys(load_arch("mobilenet_v2"))} <= keys


# ----- table files ------------------------------------------------------------------
def test_round_trip_keeps_entries_and_provenance(tiny_space, tmp_path):
    table = synthetic_table(tiny_space)
    path = tmp_path / "t.json"
    table.save(path)
    again = LatencyTable.load(path)
    assert again == table
    assert again.provenance["space_fingerprint"] == tiny_space.fingerprint()
    for field in ("backend", "device", "threads", "batch_size", "tensorflow_version", "date"):
        assert field in again.provenance


def test_wrong_schema_version_is_refused(tiny_space, tmp_path):
    data = json.loads(synthetic_table(tiny_space).to_json())
    data["schema_version"] = 7
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="schema_version 7 is not supported"):
        LatencyTable.load(path)


def test_coverage_error_names_every_missing_key(tiny_space):
    table = synthetic_table(tiny_space)
    removed = sorted(table.entries)[::7]
    for key in removed:
        del table.entries[key]
    with pytest.raises(LatencyTableError) as info:
        table.check_space(tiny_space)
    message = str(info.value)
    assert f"lacks {len(removed)} entries" in message
    for key in removed:
        assert key in message
    assert "densenas-build-lut --space=tiny --backend=tflite --threads=1 --batch_size=1" in message


def test_table_for_another_space_is_refused(tiny_space, fashion_space):
    with pytest.raises(LatencyTableError, match="built for space 'tiny'") as info:
        synthetic_table(tiny_space).check_space(fashion_space)
    out = latency.default_table_path("fashion_mnist")
    assert str(info.value).endswith(
        "build a table for this space with: densenas-build-lut --space=fashion_mnist "
        f"--backend=tflite --threads=1 --batch_size=1 --out={shlex.quote(str(out))}"
    )


# ----- validation on load -------------------------------------------------------------
def _saved_json(space, tmp_path, edit):
    """A synthetic table of space written as JSON after edit(data); returns (path, keys)."""
    data = json.loads(synthetic_table(space).to_json())
    keys = sorted(data["entries"])
    edit(data, keys)
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(data))
    return path, keys


def _set_entry(field, value):
    def edit(data, keys):
        data["entries"][keys[0]][field] = value

    return edit


def _set(field, value):
    def edit(data, keys):
        data[field] = value

    return edit


def _rebuild_command(path, space="tiny"):
    quoted = shlex.quote(str(path))
    return (
        f"mv {quoted} {shlex.quote(f'{path}.bad')} && densenas-build-lut "
        f"--space={space} --backend=tflite --threads=1 --batch_size=1 --out={quoted}"
    )


@pytest.mark.parametrize(
    "edit,problem",
    [
        (_set_entry("median_ms", float("nan")), "median_ms = nan (must be a finite number > 0)"),
        (_set_entry("median_ms", -0.2), "median_ms = -0.2 (must be a finite number > 0)"),
        (_set_entry("median_ms", 0.0), "median_ms = 0.0 (must be a finite number > 0)"),
        (_set_entry("median_ms", "0.5"), "median_ms = '0.5' (must be a finite number > 0)"),
        (_set_entry("median_ms", None), "median_ms = None (must be a finite number > 0)"),
        (_set_entry("mean_ms", float("inf")), "mean_ms = inf (must be a finite number > 0)"),
        (_set_entry("std_ms", -0.01), "std_ms = -0.01 (must be a finite number >= 0)"),
        (_set_entry("count", 0), "count = 0 (must be an integer >= 1)"),
        (_set_entry("count", "10"), "count = '10' (must be an integer >= 1)"),
        (_set_entry("count", True), "count = True (must be an integer >= 1)"),
        (_set_entry("count", 2.5), "count = 2.5 (must be an integer >= 1)"),
        (
            _set_entry("spread", 1.0),
            "has the unknown field 'spread' (the fields are median_ms, mean_ms, std_ms, count)",
        ),
    ],
)
def test_a_bad_entry_is_refused_on_load_naming_file_key_and_rebuild(
    tiny_space, tmp_path, edit, problem
):
    path, keys = _saved_json(tiny_space, tmp_path, edit)
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    message = str(info.value)
    assert message == (
        f"{path}: 1 of {len(keys)} entries is not a valid timing: {keys[0]!r} {problem}; "
        f"move it aside and rebuild it with: {_rebuild_command(path)}"
    )


@pytest.mark.parametrize(
    "edit,problem",
    [
        (lambda data, keys: data["entries"].__setitem__(keys[0], [1.0, 1.0, 0.0, 5]), "is a list"),
        (lambda data, keys: data["entries"].__setitem__(keys[0], 0.7), "is a number"),
        (lambda data, keys: data["entries"][keys[0]].pop("count"), "lacks count"),
    ],
)
def test_an_entry_of_another_shape_is_refused_on_load(tiny_space, tmp_path, edit, problem):
    path, keys = _saved_json(tiny_space, tmp_path, edit)
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    message = str(info.value)
    assert f"1 of {len(keys)} entries is not a valid timing: {keys[0]!r} {problem}" in message
    assert message.endswith(f"; move it aside and rebuild it with: {_rebuild_command(path)}")


def test_many_bad_entries_are_counted_and_a_few_named(tiny_space, tmp_path):
    def edit(data, keys):
        for key in keys[:5]:
            data["entries"][key]["median_ms"] = float("nan")

    path, keys = _saved_json(tiny_space, tmp_path, edit)
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: 5 of {len(keys)} entries are not a valid timing: ")
    assert all(f"{key!r} median_ms = nan" in message for key in keys[:3])
    assert not any(key in message for key in keys[3:5])
    assert "; and 2 more; move it aside" in message


@pytest.mark.parametrize(
    "edit,problem,space",
    [
        (
            _set("overhead_ms", float("nan")),
            "overhead_ms = nan (must be a finite number >= 0)",
            "tiny",
        ),
        (_set("overhead_ms", -0.05), "overhead_ms = -0.05 (must be a finite number >= 0)", "tiny"),
        (
            _set("overhead_ms", "0.05"),
            "overhead_ms = '0.05' (must be a finite number >= 0)",
            "tiny",
        ),
        (_set("entries", []), "entries is a list, not a mapping of latency key to timing", "tiny"),
        (_set("provenance", []), "provenance is a list (must be a mapping)", "SPACE"),
        (
            _set("provenance", {"backend": "gpu"}),
            "provenance.backend = 'gpu' (must be one of tflite, tf)",
            "SPACE",
        ),
        (lambda data, keys: data.pop("entries"), "the field entries is missing", "tiny"),
    ],
)
def test_a_bad_table_field_is_refused_on_load(tiny_space, tmp_path, edit, problem, space):
    path, _ = _saved_json(tiny_space, tmp_path, edit)
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {problem}; move it aside and rebuild it")
    assert "\n" not in message
    assert message.endswith(f" with: {_rebuild_command(path, space)}")


def test_a_list_shaped_table_is_refused(tmp_path):
    path = tmp_path / "lut.json"
    path.write_text(json.dumps([{"median_ms": 1.0}]))
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    message = str(info.value)
    assert message.startswith(
        f"{path}: the top level is a list, not a mapping of schema_version, provenance, "
        "overhead_ms and entries; move it aside and rebuild it (SPACE: the preset name or "
        "YAML/JSON file of the table's search space) with: "
    )
    assert message.endswith(f" with: {_rebuild_command(path, 'SPACE')}")
    with pytest.raises(LatencyTableError, match=r"^latency table: the top level is a list"):
        LatencyTable.from_json("[]")


def test_zero_overhead_and_zero_spread_load(tiny_space, tmp_path):
    """Zero overhead (nothing subtracted: entries already net) and zero std_ms
    (runs that timed alike) are valid; only timings must be > 0."""
    table = synthetic_table(tiny_space, overhead_ms=0.0)
    for entry in table.entries.values():
        entry.std_ms = 0.0
    path = tmp_path / "lut.json"
    table.save(path)
    again = LatencyTable.load(path)
    assert again == table
    assert again.overhead_ms == 0.0 and again.path == path


@pytest.mark.parametrize("preset", ["fashion_mnist", "imagenet_mbv2"])
def test_shipped_tables_cover_their_spaces(preset):
    space = load_space(preset)
    table = LatencyTable.load(latency.default_table_path(preset))
    table.check_space(space)
    prov = table.provenance
    assert (prov["backend"], prov["threads"], prov["batch_size"]) == ("tflite", 1, 1)
    assert all(e.count >= 50 and e.median_ms > 0 for e in table.entries.values())


# ----- expected latency ----------------------------------------------------------------
def _one_hot_path(space, path, head_choice, stack_choice):
    head_w = np.zeros((len(space.head_edges), len(space.head_ops)), np.float32)
    stack_w = np.zeros((len(space.stacking_layers), len(space.stacking_ops)), np.float32)
    probs = np.zeros(len(space.edges), np.float32)
    for row in range(len(space.head_edges)):
        head_w[row, head_choice[row]] = 1.0
    for row in range(len(space.stacking_layers)):
        stack_w[row, stack_choice[row]] = 1.0
    for src, dst in zip(path, path[1:]):
        probs[space.edge(src, dst).index] = 1.0
    return head_w, stack_w, probs


@pytest.mark.parametrize("preset", ["tiny", "fashion_mnist"])
def test_one_hot_expected_latency_equals_the_path_sum(preset):
    space = load_space(preset)
    table = synthetic_table(space, seed=1)
    expected = ExpectedLatency(space, table)
    rng = np.random.default_rng(2)
    for path in space.enumerate_paths()[:: max(1, len(space.enumerate_paths()) // 12)]:
        heads = {r: int(rng.integers(len(space.head_ops))) for r in range(len(space.head_edges))}
        stacks = {
            r: int(rng.integers(len(space.stacking_ops))) for r in range(len(space.stacking_layers))
        }
        spec = arch_from_path(space, path, heads, stacks)
        value = float(expected(*_one_hot_path(space, path, heads, stacks)))
        assert value == pytest.approx(table.predicted_ms(spec), rel=1e-6)


@pytest.mark.slow
def test_expected_latency_is_differentiable_in_alpha_and_beta(tiny_space):
    net = SuperNet.from_space(tiny_space)
    expected = ExpectedLatency(tiny_space, synthetic_table(tiny_space))
    for mode in ("all", "two"):
        sample = None if mode == "all" else net.sample_ops([1, 1], "two")
        with tf.GradientTape() as tape:
            value = expected(*net.latency_weights(mode, sample))
        grads = tape.gradient(value, net.arch_variables)
        for name, grad in zip(["alpha_head", "alpha_stack", "beta"], grads):
            assert float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grad)))) > 0, (mode, name)


def test_expected_latency_is_the_mean_over_paths_when_mixing(tiny_space):
    """With uniform op weights and path probabilities, the formula is the
    probability-weighted mean of the path sums under mean op latencies."""
    table = synthetic_table(tiny_space, seed=3)
    expected = ExpectedLatency(tiny_space, table)
    head_w = np.full((len(tiny_space.head_edges), len(tiny_space.head_ops)), 1 / 6, np.float32)
    stack_w = np.full(
        (len(tiny_space.stacking_layers), len(tiny_space.stacking_ops)), 1 / 7, np.float32
    )
    probs = np.zeros(len(tiny_space.edges), np.float32)
    for block in tiny_space.blocks:
        out = tiny_space.out_edges(block.index)
        for e in out:
            probs[e.index] = 1 / len(out)
    total = 0.0
    for path in tiny_space.enumerate_paths():
        weight = np.prod([probs[tiny_space.edge(a, b).index] for a, b in zip(path, path[1:])])
        _, _, pp = _one_hot_path(
            tiny_space, path, {r: 0 for r in range(9)}, {r: 0 for r in range(4)}
        )
        pp_lat = float(expected(head_w, stack_w, pp))
        total += weight * pp_lat
    assert float(expected(head_w, stack_w, probs)) == pytest.approx(total, rel=1e-5)


# ----- objectives --------------------------------------------------------------------
def _value_and_grad(objective, ce, lat):
    lat = tf.Variable(lat)
    with tf.GradientTape() as tape:
        loss = objective.loss(tf.constant(ce), lat)
    return float(loss), float(tape.gradient(loss, lat))


def test_paper_objective():
    """Paper eq. 8: CE + lambda * log_tau(latency), whose derivative in the
    latency is lambda / (latency * ln tau). Latencies at powers of tau give
    log_tau by hand (15 ** k: k); the others by the natural logs' ratio."""
    objective = Objective("paper", lam=0.15, tau_ms=15.0)
    value, grad = _value_and_grad(objective, 2.0, 15.0)
    assert value == pytest.approx(2.15)
    assert grad > 0
    assert _value_and_grad(objective, 2.0, 30.0)[0] > value
    ln15 = 2.70805020110221  # ln 15
    for ce, lat, log_tau in (
        (2.0, 1.0, 0.0),  # 15 ** 0
        (2.0, 15.0, 1.0),
        (2.0, 225.0, 2.0),  # 15 ** 2
        (1.3, 15.0**0.5, 0.5),  # 3.873 ms
        (0.7, 15.0**-1, -1.0),  # 0.0667 ms: below 1 ms the term is negative
        (2.0, 0.5, -0.69314718055995 / ln15),  # ln 0.5 / ln 15 = -0.256
        (2.0, 40.0, 3.68887945411394 / ln15),  # ln 40 / ln 15 = 1.362
    ):
        value, grad = _value_and_grad(objective, ce, lat)
        assert value == pytest.approx(ce + 0.15 * log_tau, rel=1e-6, abs=1e-6), lat
        assert grad == pytest.approx(0.15 / (lat * ln15), rel=1e-5), lat
    # Another lambda and tau: lambda 0.4, tau 5 ms, at 125 ms = 5 ** 3.
    value, grad = _value_and_grad(Objective("paper", lam=0.4, tau_ms=5.0), 1.0, 125.0)
    assert value == pytest.approx(1.0 + 0.4 * 3, rel=1e-6)
    assert grad == pytest.approx(0.4 / (125.0 * 1.6094379124341), rel=1e-5)  # ln 5


def test_target_objective_is_free_below_the_target():
    objective = Objective("target", lam=0.5, target_ms=10.0)
    assert _value_and_grad(objective, 1.0, 8.0) == (pytest.approx(1.0), 0.0)
    value, grad = _value_and_grad(objective, 1.0, 12.0)
    assert value == pytest.approx(1.0 + 0.5 * 0.2) and grad > 0


def test_proxyless_objective_is_multiplicative():
    objective = Objective("proxyless", target_ms=10.0, beta=0.6)
    value, grad = _value_and_grad(objective, 2.0, 20.0)
    assert value == pytest.approx(2.0 * 2.0**0.6)
    assert grad > 0
    assert _value_and_grad(objective, 2.0, 10.0)[0] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "config,fragment",
    [
        ({"kind": "fastest"}, "unknown objective"),
        ({"kind": "target"}, "needs a positive target_ms"),
        ({"kind": "paper", "tau_ms": 1.0}, "tau_ms"),
        ({"kind": "paper", "lambda": 0.2}, "unknown field 'lambda'"),
    ],
)
def test_bad_objective_configs(config, fragment):
    with pytest.raises(ValueError, match=fragment):
        Objective.from_config(config)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_predicted_latency_counts_overhead_once(tiny_space):
    table = synthetic_table(tiny_space, overhead_ms=0.5)
    spec = arch_from_path(
        tiny_space,
        tiny_space.enumerate_paths()[0],
        {r: 0 for r in range(9)},
        {r: 6 for r in range(4)},
    )
    keys = latency.arch_keys(spec)
    raw = sum(table.entries[k.key].median_ms for k in keys)
    assert table.predicted_ms(spec) == pytest.approx(raw - 0.5 * (len(keys) - 1))
    with pytest.raises(LatencyTableError, match="lacks 1 entry"):
        smaller = copy.deepcopy(table)
        del smaller.entries[keys[1].key]
        smaller.predicted_ms(spec)


# ----- messages that name the space's file -------------------------------------------
def _space_file(tmp_path, config, name):
    path = tmp_path / "my spaces" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def test_missing_keys_hint_builds_the_space_from_its_file(tiny_config, tmp_path):
    tiny_config["name"] = "tiny_from_file"
    space_file = _space_file(tmp_path, tiny_config, "tiny_from_file.json")
    space = load_space(space_file)
    synthetic_table(space).save(tmp_path / "lut.json")
    table = LatencyTable.load(tmp_path / "lut.json")
    dropped = sorted(table.entries)[:2]
    for key in dropped:
        del table.entries[key]
    with pytest.raises(LatencyTableError) as info:
        table.check_space(space, space_file)
    message = str(info.value)
    assert message.startswith(f"the latency table {tmp_path / 'lut.json'} lacks 2 entries:")
    assert all(key in message for key in dropped)
    assert message.endswith(
        f"with:\n  densenas-build-lut --space={shlex.quote(str(space_file))} "
        f"--backend=tflite --threads=1 --batch_size=1 --out={tmp_path / 'lut.json'}"
    )
    # Not knowing the file, the hint says what to put there instead of a name
    # that is no preset.
    with pytest.raises(LatencyTableError) as info:
        table.check_space(space)
    assert (
        "(SPACE_FILE: the YAML/JSON file that defines space 'tiny_from_file') with:\n"
        "  densenas-build-lut --space=SPACE_FILE "
    ) in str(info.value)


def test_missing_keys_hint_never_names_a_preset_of_other_content(tiny_config, tmp_path):
    tiny_config["final_conv_width"] = 64  # still named 'tiny'
    space_file = _space_file(tmp_path, tiny_config, "tiny.yaml")
    space = load_space(space_file)
    table = synthetic_table(space)
    del table.entries[sorted(table.entries)[0]]
    with pytest.raises(LatencyTableError) as info:
        table.check_space(space)
    message = str(info.value)
    assert "--space=tiny " not in message
    assert (
        "(SPACE_FILE: the YAML/JSON file that defines space 'tiny', not the preset 'tiny', "
        "whose content differs) with:\n  densenas-build-lut --space=SPACE_FILE "
    ) in message
    with pytest.raises(LatencyTableError) as info:
        table.check_space(space, space_file)
    assert f"densenas-build-lut --space={shlex.quote(str(space_file))} " in str(info.value)


def test_edited_space_is_refused_as_changed_content_with_the_rebuild(
    tiny_space, tiny_config, tmp_path
):
    table_path = tmp_path / "lut.json"
    synthetic_table(tiny_space).save(table_path)
    table = LatencyTable.load(table_path)
    tiny_config["final_conv_width"] = 64  # an edited copy, name kept
    space_file = _space_file(tmp_path, tiny_config, "tiny.yaml")
    edited = load_space(space_file)
    assert edited.name == tiny_space.name
    with pytest.raises(LatencyTableError) as info:
        table.check_space(edited, space_file)
    message = str(info.value)
    quoted = shlex.quote(str(space_file))
    assert message == (
        f"{table_path}: the content of space 'tiny' changed since this latency table was built "
        f"(fingerprint {tiny_space.fingerprint()} then, {edited.fingerprint()} now), so its "
        "entries do not describe the space; move the stale table aside and rebuild it with: "
        f"mv {table_path} {table_path}.stale && densenas-build-lut --space={quoted} "
        f"--backend=tflite --threads=1 --batch_size=1 --out={table_path}"
    )
    assert "not for 'tiny'" not in message
    # The same refusal from the entry point that sees only the fingerprint.
    with pytest.raises(LatencyTableError, match="the content of space 'tiny' changed"):
        table.check_fingerprint(edited, space_file)
    table.check_fingerprint(tiny_space)  # the unedited space passes


def test_the_table_check_takes_each_nets_quietest_round_and_reports_the_noise(monkeypatch):
    """Load slows some rounds (here 3x in round 2 of every net): the check
    takes each net's least round median, so a table that predicts the quiet
    figures passes; one that is off by 30 % is refused, and the refusal says
    how far the rounds spread."""
    from densenas_tf.latency import check
    from densenas_tf.latency.measure import device_description

    space = load_space("tiny")
    table = made_up_table(space, lambda k, key: 0.01 + 0.001 * (k % 5), device=device_description())
    quiet = copy.deepcopy(table)  # what the nets take here when nothing else runs
    calls = {}

    def fake_timer(spec, backend, threads, batch_size, warmup, quantization="none"):
        truth = quiet.predicted_ms(spec)
        calls[spec.name] = 0

        def timer(runs):
            calls[spec.name] += 1
            return truth * (3.0 if calls[spec.name] == 2 else 1.0)

        return timer

    monkeypatch.setattr(check, "arch_timer", fake_timer)
    logged = []
    result = check.check_table_here(space, table, "t.json", num_nets=4, rounds=3, log=logged.append)
    assert result["checked"] and result["mape_percent"] == pytest.approx(0.0, abs=1e-9)
    assert calls == {f"random_{i}": 3 for i in range(4)}
    assert result["round_spread_percent"]["max"] == pytest.approx(200.0)
    assert all(
        r["round_medians_ms"][1] == pytest.approx(3 * r["measured_ms"]) for r in result["rows"]
    )
    assert "differed by up to 200 %" in logged[-1]
    for entry in table.entries.values():
        entry.median_ms *= 1.3
    table.overhead_ms *= 1.3
    with pytest.raises(LatencyTableError, match=r"30\.0 % mean error .* differed by up to 200 %"):
        check.check_table_here(space, table, "t.json", num_nets=4, rounds=3, log=lambda line: None)


def test_a_table_of_the_same_cpu_model_with_other_vector_instructions_is_not_checked_here(
    monkeypatch,
):
    """Tables record the CPU's widest vector instructions; one whose model name
    matches this machine's but whose instructions differ (AVX2 against AVX-512,
    say) is another device for latency, so it is not checked against nets
    timed here; one that records the same instructions, or none, is."""
    from densenas_tf.latency import check
    from densenas_tf.latency.measure import device_description, vector_isa

    assert vector_isa() in ("AVX2", "no AVX2", "unknown") or vector_isa().startswith("AVX-512")
    space = load_space("tiny")
    table = made_up_table(space, lambda k, key: 0.01, device=device_description())
    monkeypatch.setattr(
        check, "arch_timer", lambda spec, *a: lambda runs, spec=spec: table.predicted_ms(spec)
    )
    other = "AVX2" if vector_isa() != "AVX2" else "AVX-512 (VNNI, bf16)"
    logged = []
    table.provenance["vector_isa"] = other
    result = check.check_table_here(space, table, "t.json", num_nets=2, rounds=1, log=logged.append)
    assert not result["checked"] and result["device"].endswith(other)
    assert "not on this machine" in logged[-1]
    for isa in (vector_isa(), None):
        if isa is None:
            del table.provenance["vector_isa"]
        else:
            table.provenance["vector_isa"] = isa
        result = check.check_table_here(
            space, table, "t.json", num_nets=2, rounds=1, log=lambda line: None
        )
        assert result["checked"] and result["mape_percent"] == pytest.approx(0.0, abs=1e-9)
