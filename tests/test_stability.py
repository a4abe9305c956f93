"""A config over seeds (tools/stability.py) and one search under several budgets
(tools/budget_sweep.py): what they count and what they write."""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, made_up_table, micro_space, short_search_config, write_space

from densenas_tf.experiments import stability
from densenas_tf.latency.expected import latency_costs
from densenas_tf.space import budget
from densenas_tf.space.derive import arch_from_path
from densenas_tf.space.spaces import SearchSpace

SPACE = micro_space(
    "micro_stability",
    widths=[8, 12, 16, 24],
    feature_map_sizes=[28, 14, 7, 7],
    stages=[0, 1, 2, 2],
    stacking_layers=[0, 1, 1, 0],
)


def test_decisions_and_agreement_count_blocks_and_shared_layers():
    space = SearchSpace.from_config(SPACE)
    paths = space.enumerate_paths()
    long = max(paths, key=len)
    short = min(paths, key=len)
    rows_of = {b.index: space.stacking_rows(b.index) for b in space.blocks}

    def net(path, head_op, stack_op):
        heads = {space.head_row(space.edge(s, d)): head_op for s, d in zip(path, path[1:])
                 if d != space.final_node}  # fmt: skip
        stacks = {r: stack_op for b in path[1:-1] for r in rows_of[b]}
        return arch_from_path(space, path, heads, stacks)

    a = stability.decisions(space, long, net(long, 0, 0))
    assert a == stability.decisions(space, long, net(long, 0, 0))
    blocks = [k for k in a if k.count(" ") == 1]
    assert len(blocks) == len(space.blocks) - 1
    assert all(a[k] == "in" for k in blocks if int(k.split()[1]) in long)
    same = stability.agreement([a, a])
    assert same["blocks_agreeing"] == same["blocks"] == len(blocks)
    assert same["shared_layers_agreeing"] == same["shared_layers"] == len(a) - len(blocks)
    # Other ops on the same path: every block agrees, no layer's op does.
    b = stability.decisions(space, long, net(long, 1, 1))
    other = stability.agreement([a, b])
    assert other["blocks_agreeing"] == len(blocks)
    assert other["shared_layers_agreeing"] == 0 < other["shared_layers"]
    # Another path: only the blocks both take or both skip agree, and only the
    # layers both have are compared.
    c = stability.decisions(space, short, net(short, 0, 0))
    apart = stability.agreement([a, c])
    taken = sum((int(k.split()[1]) in long) == (int(k.split()[1]) in short) for k in blocks)
    assert apart["blocks_agreeing"] == taken < len(blocks)
    assert apart["shared_layers"] == len((set(a) & set(c)) - set(blocks))


@pytest.mark.slow
def test_seeds_under_a_budget_and_a_sweep_of_budgets_over_one_search(tmp_path):
    """Two seeds searched to a budget on a made-up table: every derived net
    predicts within the budget, is timed here and counted against it; a second
    run searches and times nothing again. tools/budget_sweep.py re-derives the
    first seed's search under three budgets: each net predicts within its
    budget, the predictions rise with it, and the table it prints is the one it
    writes."""
    space = SearchSpace.from_config(SPACE)
    space_file = write_space(tmp_path, SPACE)
    table = made_up_table(space, lambda k, key: 0.002 * (1 + k % 5))
    table_file = tmp_path / "table.json"
    table.save(table_file)
    costs = latency_costs(space, table)
    zeros = dict(
        alpha_head=np.zeros((len(space.head_edges), len(space.head_ops))),
        alpha_stack=np.zeros((len(space.stacking_layers), len(space.stacking_ops))),
        beta=np.zeros(len(space.edges)),
    )
    fastest = budget.fastest_architecture(space, costs, **zeros).latency_ms
    target = 1.5 * fastest
    config = short_search_config(space_file, table_file, 256, 0.25)
    config_file = tmp_path / "search.json"
    config_file.write_text(config.to_json())
    plan = stability.StabilityPlan(
        search_config=str(config_file),
        seeds=(0, 1),
        target_ms=target,
        latency_table=str(table_file),
        latency_runs=3,
        latency_rounds=1,
    )
    out = tmp_path / "stability"
    result = stability.run_stability(out, plan, log=lambda line: None)
    assert result["budget_ms"] == target
    assert [r["seed"] for r in result["seeds"]] == [0, 1]
    predicted = []
    for row in result["seeds"]:
        assert row["predicted_ms"] <= target + budget.TOLERANCE_MS
        assert row["predicted_of_budget"] == pytest.approx(row["predicted_ms"] / target)
        assert row["measured_ms"] > 0
        record = json.loads((out / f"seed_{row['seed']}" / "latency.json").read_text())
        assert record["tflite_ms"] == row["measured_ms"]
        predicted.append(row["predicted_ms"])
    in_band = sum(stability.LOW * target <= p <= target + 1e-9 for p in predicted)
    assert result["predicted_within_band"] == in_band
    assert (out / "stability.md").read_text().strip() == stability.format_stability(result)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "stability.json"}
    again = stability.run_stability(out, plan, log=lambda line: None)
    assert again["seeds"] == result["seeds"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    run_dir = out / "seed_0"
    targets = [f * fastest for f in (1.1, 1.5, 3.0)]
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable, str(ROOT / "tools" / "budget_sweep.py"), f"--run_dir={run_dir}",
        f"--targets_ms={','.join(repr(t) for t in targets)}", f"--out_dir={sweep_dir}",
        "--rounds=1", "--runs=3",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = json.loads((sweep_dir / "budget_sweep.json").read_text())
    rows = sweep["rows"]
    assert rows[0]["target_ms"] is None  # the paper's derivation first
    assert [r["target_ms"] for r in rows[1:]] == targets
    for row in rows[1:]:
        assert row["predicted_ms"] <= row["target_ms"] + budget.TOLERANCE_MS
        assert row["measured_ms"] > 0 and len(row["round_medians_ms"]) == 1
    assert [r["predicted_ms"] for r in rows[1:]] == sorted(r["predicted_ms"] for r in rows[1:])
    text = (sweep_dir / "budget_sweep.md").read_text()
    assert text.strip() == done.stdout.strip() == stability.format_budget_sweep(sweep)
    refused = subprocess.run(
        [*command[:3], "--targets_ms=0.1,-1"], capture_output=True, text=True, timeout=300
    )
    assert refused.returncode != 0 and "--targets_ms must be positive, got [-1.0]" in (
        refused.stderr
    )
    too_small = subprocess.run(
        [*command[:3], f"--targets_ms={fastest / 2!r}", f"--out_dir={tmp_path / 'x'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert too_small.returncode != 0 and "give a budget of at least" in too_small.stderr
    assert "Traceback" not in too_small.stderr


@pytest.mark.slow
def test_time_nets_prints_float_and_int8_medians_and_the_tables_predictions(tmp_path):
    from densenas_tf.latency.report import random_arch
    from densenas_tf.latency.table import default_table_path
    from densenas_tf.space.spaces import load_space

    space = load_space("fashion_mnist")
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        path = tmp_path / f"net{i}.json"
        random_arch(space, rng, f"net{i}").save(path)
        files.append(path)
    from densenas_tf.space.baselines import mobilenet_v2_fashion

    other = tmp_path / "mnv2.json"  # a net the table has no pieces of
    mobilenet_v2_fashion(0.5).save(other)
    table = default_table_path("fashion_mnist")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "time_nets.py"), *(f"--arch={f}" for f in files),
         f"--arch={other}", "--quantization=none,int8", "--rounds=1", "--runs=3",
         f"--table={table}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"| net | float ms | int8 ms | predicted ({table}) |"
    from densenas_tf.latency.table import LatencyTable
    from densenas_tf.space.arch_spec import ArchSpec

    for path, line in zip(files, lines[2:4], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == str(path) and float(cells[1]) > 0 and float(cells[2]) > 0
        spec = ArchSpec.from_json(path.read_text())
        assert cells[3] == f"{LatencyTable.load(table).predicted_ms(spec):.3f}"
    # MobileNetV2 is timed; its prediction is "-", and a note below says why.
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert cells[0] == str(other) and float(cells[1]) > 0 and cells[3] == "-"
    assert lines[5].startswith("- mobilenet_v2_x0.5 on ") and "lacks" in lines[5], lines[5:]
    refused = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "time_nets.py"), f"--arch={files[0]}",
         "--quantization=fp16"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0 and "--quantization takes none and int8" in refused.stderr
