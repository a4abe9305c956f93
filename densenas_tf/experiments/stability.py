"""How stable a search is over seeds: one config searched with several seeds,
each derived net's latency measured here, and how many decisions agree.

``run_stability(out_dir, config, seeds, ...)`` searches (or resumes) one run
per seed in ``out_dir/seed_<s>``, then times every derived net as float TFLite
(1 thread, batch 1), interleaved in rounds so that load on the machine falls on
all of them alike, and writes ``stability.json`` and ``stability.md``:

- per seed: the path, the net, its predicted and measured latency, and (with a
  budget) both as fractions of the budget;
- over seeds: mean, standard deviation and range of the measured latency, how
  many nets predict within [0.9, 1.0] x budget and measure within 10 % of it;
- agreement: the share of the space's blocks that every seed's path takes or
  every seed's path skips, and of the layers on every seed's path the share
  where every seed picked the same op.

Each stage resumes: a finished search is read back, measured latencies are
kept in ``latency.json`` per seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.files import cached_json, write_text_atomic
from densenas_tf.latency.measure import (
    arch_timer,
    build_table,
    mobilenet_v2_budget,
)
from densenas_tf.latency.table import LatencyTable, default_table_path
from densenas_tf.search.config import load_search_config
from densenas_tf.search.run import derive_from_checkpoint, run_search
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace, load_space

# A derived net meets its budget when it predicts within [LOW, 1] x budget and
# measures within MEASURED_TOLERANCE of it.
LOW = 0.9
MEASURED_TOLERANCE = 0.10


def decisions(space: SearchSpace, path: Sequence[int], spec: ArchSpec) -> dict[str, str]:
    """One net's decisions by name: each block in or out of the path, and on
    the path each head layer's op and each stacking layer's op (skip included)."""
    out = {f"block {b.index}": "in" if b.index in path else "out" for b in space.blocks[1:]}
    for (src, dst), block in zip(itertools.pairwise(path), spec.blocks):
        out[f"block {dst} head"] = f"{block.head_op} from {src}"
        rows = space.stacking_rows(dst)
        ops = list(block.stacking_ops) + ["skip"] * (len(rows) - len(block.stacking_ops))
        for k, op in enumerate(ops):
            out[f"block {dst} layer {k + 1}"] = op
    return out


def agreement(all_decisions: list[dict[str, str]]) -> dict[str, Any]:
    """Shares of decisions on which every net agrees: blocks taken or skipped,
    and ops of the layers that every net has."""
    blocks = [k for k in all_decisions[0] if k.count(" ") == 1]
    same_blocks = [k for k in blocks if len({d[k] for d in all_decisions}) == 1]
    layers = set.intersection(*(set(d) - set(blocks) for d in all_decisions))
    same_layers = [k for k in sorted(layers) if len({d[k] for d in all_decisions}) == 1]
    return {
        "blocks": len(blocks),
        "blocks_agreeing": len(same_blocks),
        "shared_layers": len(layers),
        "shared_layers_agreeing": len(same_layers),
    }


def time_nets(
    specs: dict[str, ArchSpec],
    rounds: int,
    runs: int,
    log: Callable[[str], None],
    quantization: str = "none",
) -> dict[str, list[float]]:
    """Each net's median latency (TFLite, 1 thread; float, or int8 as the
    exporter quantizes it) in each of ``rounds`` rounds; a round times every
    net once, so load falls on all alike."""
    timers = {
        name: arch_timer(spec, "tflite", 1, warmup=20, quantization=quantization)
        for name, spec in specs.items()
    }
    medians: dict[str, list[float]] = {name: [] for name in specs}
    for r in range(rounds):
        log(f"timing {len(specs)} net(s): round {r + 1}/{rounds}")
        for name, timer in timers.items():
            medians[name].append(timer(runs))
    return medians


@dataclasses.dataclass(frozen=True)
class StabilityPlan:
    search_config: str = "fashion_mnist_quick"
    search_overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    target_ms: float | None = None  # None: budget_width's, else the config's objective
    budget_width: float | None = None  # the budget: MobileNetV2 at this width, measured here
    latency_table: str | None = None  # None: measured here first (cached)
    latency_runs: int = 200
    latency_rounds: int = 5


def run_stability(
    out_dir: str | Path,
    plan: StabilityPlan,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    out_dir = Path(out_dir)
    base = load_search_config(plan.search_config, plan.search_overrides)
    space = load_space(base.space)
    overrides = list(plan.search_overrides)
    if plan.latency_table is None:
        table_path = out_dir / "latency" / default_table_path(space.name).name
        if not table_path.is_file():
            log(f"== measuring the latency table of {space.name} on this machine")
        build_table(space, table_path, log=log)  # resumes or returns a finished table
        overrides += [f"latency_table={table_path}", "latency_check=false"]
    else:
        table_path = Path(plan.latency_table)
        overrides.append(f"latency_table={table_path}")
    target_ms = plan.target_ms
    if target_ms is None and plan.budget_width is not None:
        target_ms = cached_json(
            out_dir / "budget.json",
            lambda: mobilenet_v2_budget(plan.budget_width, plan.latency_runs, log),
        )["target_ms"]
    if target_ms is not None:
        log(f"latency budget {target_ms:.4f} ms")
        overrides += ["objective.kind=budget", f"objective.target_ms={target_ms!r}"]
    table = LatencyTable.load(table_path)
    runs = {}
    for seed in plan.seeds:
        config = load_search_config(plan.search_config, (*overrides, f"seed={seed}"))
        log(f"== search, seed {seed}")
        runs[seed] = run_search(config, out_dir / f"seed_{seed}", log=log)
    budget = target_ms

    missing = {
        seed: r.arch for seed, r in runs.items() if not (r.run_dir / "latency.json").is_file()
    }
    if missing:
        timed = time_nets(
            {str(s): spec for s, spec in missing.items()},
            plan.latency_rounds,
            plan.latency_runs,
            log,
        )
        for seed in missing:
            record = {
                "tflite_ms": float(np.median(timed[str(seed)])),
                "round_medians_ms": timed[str(seed)],
            }
            write_text_atomic(
                runs[seed].run_dir / "latency.json", json.dumps(record, indent=2) + "\n"
            )
    rows = []
    for seed, result in runs.items():
        measured = json.loads((result.run_dir / "latency.json").read_text())["tflite_ms"]
        predicted = table.predicted_ms(result.arch)
        rows.append(
            {
                "seed": seed,
                "path": result.summary["path"],
                "arch": result.arch.to_block_string(),
                "path_margin": result.summary.get("path_margin"),
                "predicted_ms": predicted,
                "measured_ms": measured,
                **(
                    {
                        "predicted_of_budget": predicted / budget,
                        "measured_of_budget": measured / budget,
                    }
                    if budget
                    else {}
                ),
                "supernet_accuracy": result.summary["epoch_reports"][-1]["supernet_eval"]["acc"],
            }
        )
    measured = np.array([r["measured_ms"] for r in rows])
    predicted = np.array([r["predicted_ms"] for r in rows])
    agree = agreement([decisions(space, r.summary["path"], r.arch) for r in runs.values()])
    result = {
        "search_config": plan.search_config,
        "overrides": overrides,
        "budget_ms": budget,
        "latency_table": str(table_path),
        "device": table.provenance.get("device"),
        "seeds": rows,
        "measured_ms": _spread(measured),
        "predicted_ms": _spread(predicted),
        "agreement": agree,
    }
    if budget:
        result["predicted_within_band"] = int(
            np.sum((predicted <= budget + 1e-9) & (predicted >= LOW * budget))
        )
        result["measured_within_tolerance"] = int(
            np.sum(np.abs(measured / budget - 1.0) <= MEASURED_TOLERANCE)
        )
    write_text_atomic(out_dir / "stability.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out_dir / "stability.md", format_stability(result) + "\n")
    return result


def _spread(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def format_stability(r: dict[str, Any]) -> str:
    budget = r["budget_ms"]
    lines = [
        f"search config {r['search_config']}"
        + (f", budget {budget:.3f} ms" if budget else ", no budget")
        + f"; latency table {r['latency_table']} ({r['device']})",
        "",
        "| seed | path | predicted ms | measured ms |"
        + (" predicted / budget | measured / budget |" if budget else "")
        + " supernet accuracy |",
        "|---|---|---|---|" + ("---|---|" if budget else "") + "---|",
    ]
    for row in r["seeds"]:
        lines.append(
            f"| {row['seed']} | {'-'.join(map(str, row['path']))} | {row['predicted_ms']:.3f} | "
            f"{row['measured_ms']:.3f} |"
            + (
                f" {row['predicted_of_budget']:.3f} | {row['measured_of_budget']:.3f} |"
                if budget
                else ""
            )
            + f" {row['supernet_accuracy']:.4f} |"
        )
    m, p, a = r["measured_ms"], r["predicted_ms"], r["agreement"]
    lines += [
        "",
        f"measured latency: mean {m['mean']:.3f} ms, sd {m['std']:.3f}, range "
        f"{m['min']:.3f}-{m['max']:.3f} ms; predicted: mean {p['mean']:.3f}, sd {p['std']:.3f}",
        f"agreement: {a['blocks_agreeing']}/{a['blocks']} blocks taken or skipped by every "
        f"seed; {a['shared_layers_agreeing']}/{a['shared_layers']} layers on every seed's "
        "path with the same op",
    ]
    if budget:
        n = len(r["seeds"])
        lines.append(
            f"within the budget: {r['predicted_within_band']}/{n} predict within "
            f"[{LOW}, 1.0] x budget; {r['measured_within_tolerance']}/{n} measure within "
            f"{MEASURED_TOLERANCE:.0%} of it"
        )
    return "\n".join(lines)


# ----- one finished search re-derived under several budgets ---------------------------------
def budget_sweep(
    run_dir: str | Path,
    targets_ms: Sequence[float],
    rounds: int = 5,
    runs: int = 200,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """A finished search re-derived under each budget (no new search), beside
    the paper's derivation; every net timed here as float TFLite (1 thread,
    batch 1) in interleaved rounds. A budget below the fastest net of the
    space is refused by the derivation (``BudgetError``)."""
    run_dir = Path(run_dir)
    table = LatencyTable.load(run_dir / "latency_table.json")
    specs = {"paper": derive_from_checkpoint(run_dir, paper=True)}
    for target in targets_ms:
        specs[f"{target:g}"] = derive_from_checkpoint(run_dir, target_ms=target)
    log(f"timing {len(specs)} net(s) in {rounds} interleaved round(s) of {runs} runs")
    timed = time_nets(specs, rounds, runs, log)
    rows = []
    for label, spec in specs.items():
        budget = spec.provenance.get("budget") or {}
        measured = float(np.median(timed[label]))
        rows.append(
            {
                "target_ms": budget.get("target_ms"),
                "arch": spec.to_block_string(),
                "predicted_ms": table.predicted_ms(spec),
                "measured_ms": measured,
                "round_medians_ms": timed[label],
                "ops_not_argmax": budget.get("ops_not_argmax", 0),
                "log_probability": budget.get("log_probability"),
                # Before the band (objective.min_fraction): the most probable net within
                # the budget, when the band replaced it.
                "most_probable_within_budget_ms": (budget.get("band") or {}).get(
                    "most_probable_within_budget_ms"
                ),
            }
        )
    return {
        "run_dir": str(run_dir),
        "latency_table": str(run_dir / "latency_table.json"),
        "device": table.provenance.get("device"),
        "rounds": rounds,
        "runs": runs,
        "rows": rows,
    }


def format_budget_sweep(r: dict[str, Any]) -> str:
    lines = [
        f"search {r['run_dir']} re-derived under each budget; predicted on its table "
        f"({r['device']}); measured here as float TFLite, 1 thread, median of "
        f"{r['rounds']} interleaved round(s) of {r['runs']} runs",
        "",
        "| budget ms | predicted ms | without the band | measured ms | measured / budget "
        "| ops not argmax | net |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        t, measured = row["target_ms"], row["measured_ms"]
        before = row.get("most_probable_within_budget_ms")
        lines.append(
            f"| {'paper' if t is None else f'{t:.3f}'} | {row['predicted_ms']:.3f} | "
            f"{'' if before is None else f'{before:.3f}'} | "
            f"{measured:.3f} | {'' if t is None else f'{measured / t:.2f}'} | "
            f"{row['ops_not_argmax']} | `{row['arch'].replace('|', chr(92) + '|')}` |"
        )
    return "\n".join(lines)
