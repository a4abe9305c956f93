"""The paper's Fig. 5 at equal latency (``tools/compare.py --equal_latency``).

The budgets are the measured latencies of MobileNetV2 at several widths on
the machine that runs the comparison (float TFLite, 1 thread, batch 1). For
each budget and each seed:

- DenseNAS: the quick search on the dense ``fashion_mnist`` space aimed at
  the budget (objective kind ``budget``: its net predicts at most the budget);
- random search (keras-tuner): nets drawn uniformly over the dense space and
  kept only when they predict within [0.9, 1.0] x the budget, each trial a
  short training scored on the architecture split, with the multiply-adds of
  one search; the best is retrained;
- MobileNetV2 at that width (whose latency is the budget);
- at the middle budget, the same search on the fixed-block space.

Every net is retrained with the same recipe and seed, tested, and timed here
in interleaved rounds. Per budget the verdict of DenseNAS against each other
method follows the two-standard-error rule. Each stage resumes, so the command can be
stopped and run again. A finished stage leaves a small record that is all a
resumed run needs of it: a search its net in ``seedN/searched/LABEL.json``, a
random search ``seedN/random_W/result.json``, a training ``metrics.json`` beside
its ``train_config.json``, a timing ``latency.json``; with ``budgets.json`` and
the measured tables in ``latency/``, these records move a run to another
machine without its checkpoints or trained models (nets are timed as built
from their ArchSpecs).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.files import cached_json, write_bytes_atomic, write_text_atomic
from densenas_tf.data.sources import load_image_data, split_indices
from densenas_tf.experiments import compare
from densenas_tf.experiments.stability import (
    LOW,
    MEASURED_TOLERANCE,
    agreement,
    decisions,
    time_nets,
)
from densenas_tf.latency.measure import (
    arch_timer,
    device_description,
    mobilenet_v2_budget,
    vector_isa,
)
from densenas_tf.latency.table import LatencyTable, default_table_path
from densenas_tf.search.config import load_search_config
from densenas_tf.search.run import derive_from_checkpoint, run_search
from densenas_tf.space.arch_spec import ArchSpec, count_costs
from densenas_tf.space.baselines import mobilenet_v2_fashion
from densenas_tf.space.spaces import load_space
from densenas_tf.train.trainer import TrainConfig, train

FAMILIES = ("DenseNAS", "random search", "MobileNetV2", "fixed-block")


@dataclasses.dataclass(frozen=True)
class EqualLatencyPlan:
    search_config: str = "fashion_mnist_quick"
    search_overrides: tuple[str, ...] = ()
    widths: tuple[float, ...] = (0.5, 0.75, 1.0)  # MobileNetV2 widths giving the budgets
    seeds: tuple[int, ...] = (0, 1, 2)
    fixed_block: bool = True  # the fixed-block search at the middle budget
    train_epochs: int = 3
    train_limit: int | None = None
    test_limit: int | None = None
    random_trial_images: int = 7680
    # A cap far above what one search's multiply-adds buy (about 60 trials at the
    # smallest budget): the compute, not the cap, ends each random search.
    random_max_trials: int = 400
    band: float = 0.9  # random search keeps nets predicting within [band, 1] x budget
    budget_runs: int = 200
    latency_runs: int = 100
    latency_rounds: int = 5
    latency_tables: str = "measure"  # or "shipped" (quick checks of the pipeline)
    seed: int = 0  # the data's subset


# The small records a resumed run needs (patterns under run_dir); see copy_records.
RECORDS = (
    "budgets.json",
    "latency/*.json",
    "seed*/searched/*.json",
    "seed*/archs/*.json",
    "seed*/random_*/result.json",
    # A random search's keras-tuner state (trial records, no models): one
    # stopped midway goes on from its last trial.
    "seed*/random_*/tuner/*.json",
    "seed*/random_*/tuner/trial_*/trial.json",
    "seed*/train/*/train_config.json",
    "seed*/train/*/metrics.json",
    "seed*/train/*/latency.json",
)


def copy_records(run_dir: str | Path, to: str | Path) -> list[Path]:
    """Copies a run's records (RECORDS) to another directory, which then resumes
    the run from where the records leave it, with no checkpoint or trained
    model; returns the files copied (relative to run_dir)."""
    run_dir, to = Path(run_dir), Path(to)
    copied = sorted({p.relative_to(run_dir) for pattern in RECORDS for p in run_dir.glob(pattern)})
    for rel in copied:
        (to / rel).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(to / rel, (run_dir / rel).read_bytes())
    return copied


REDUCED = EqualLatencyPlan(
    search_overrides=compare.REDUCED.search_overrides,
    widths=(0.75,),
    seeds=(0,),
    train_epochs=1,
    train_limit=1000,
    test_limit=300,
    random_trial_images=256,
    random_max_trials=2,
    budget_runs=20,
    latency_runs=5,
    latency_rounds=2,
    latency_tables="shipped",
)


def machine_description() -> str:
    """This machine as ``device_description`` gives it, with its widest vector
    instructions: CPUs of one model name differ there, and with them the
    relative latency of ops."""
    return f"{device_description()}, {vector_isa()}"


def width_label(width: float) -> str:
    return f"x{width:g}"


def run_equal_latency(
    run_dir: str | Path,
    plan: EqualLatencyPlan = EqualLatencyPlan(),
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tables = compare._tables(run_dir, plan, log)
    budgets = cached_json(
        run_dir / "budgets.json",
        lambda: {
            width_label(w): mobilenet_v2_budget(w, plan.budget_runs, log) for w in plan.widths
        },
    )
    _check_budgets(run_dir, plan, budgets)
    for w in plan.widths:
        log(f"budget {width_label(w)}: {budgets[width_label(w)]['target_ms']:.4f} ms")
    data = load_image_data(
        "fashion_mnist", train_limit=plan.train_limit, test_limit=plan.test_limit, seed=plan.seed
    )
    rows = []
    for seed in plan.seeds:
        seed_rows = _run_seed(run_dir / f"seed{seed}", plan, seed, tables, budgets, data, log)
        # Each seed's nets are timed when its trainings end, with its MobileNetV2s
        # in the same interleaved rounds, on the machine that ran them (recorded:
        # a run resumed elsewhere may time later seeds on another CPU). A net is
        # built from its ArchSpec (weights do not change a float net's latency),
        # the way the budgets and the tables are measured.
        specs = {Path(r["model_dir"]): r.pop("spec") for r in seed_rows}
        compare.measure_latencies(
            list(specs),
            plan,
            log,
            make_timer=lambda model_dir, specs=specs: arch_timer(specs[model_dir], "tflite", 1),
            record={"machine": machine_description()},
        )
        rows += [_timed(row) for row in seed_rows]
    results = _results(plan, budgets, rows, tables, len(data.test_labels), started)
    _write_report(run_dir, results)
    return results


def report_from_records(
    run_dir: str | Path, plan: EqualLatencyPlan = EqualLatencyPlan()
) -> dict[str, Any]:
    """The comparison's results from the records of the seeds finished so far
    (every net searched, trained and timed), running nothing; written to
    ``run_dir`` as a finished run's are. ``results["seeds_unfinished"]`` names
    the plan's seeds left out. Raises ValueError when no seed is finished."""
    run_dir = Path(run_dir)
    started = time.time()
    budgets_file = run_dir / "budgets.json"
    if not budgets_file.is_file():
        raise ValueError(
            f"{run_dir} holds no budgets.json: no equal-latency run has started there "
            "(run it without --report_only first)"
        )
    budgets = json.loads(budgets_file.read_text())
    _check_budgets(run_dir, plan, budgets)
    tables = {}
    for space in ("fashion_mnist", "fixed_block_fashion"):
        shipped = default_table_path(space)
        tables[space] = (
            shipped if plan.latency_tables == "shipped" else run_dir / "latency" / shipped.name
        )
        if not tables[space].is_file():
            raise ValueError(
                f"{run_dir} holds no latency table {tables[space]}: the run has not measured "
                "its tables yet (run it without --report_only first)"
            )
    loaded = {name: LatencyTable.load(path) for name, path in tables.items()}
    rows, done, test_images = [], [], None
    for seed in plan.seeds:
        seed_dir = run_dir / f"seed{seed}"
        seed_rows = []
        for label, family, width in _planned_nets(plan):
            model_dir = seed_dir / "train" / label
            needed = [seed_dir / "archs" / f"{label}.json"] + [
                model_dir / name for name in ("metrics.json", "latency.json")
            ]
            if not all(path.is_file() for path in needed):
                break
            spec = ArchSpec.from_json(needed[0].read_text(), source=str(needed[0]))
            metrics = json.loads(needed[1].read_text())
            test_images = metrics.get("test_images", test_images)
            seed_rows.append(
                _row(label, family, width, spec, _recorded_info(seed_dir, label, family),
                     metrics, loaded, budgets, seed, model_dir)
            )  # fmt: skip
        else:
            rows += [_timed(row) for row in seed_rows]
            done.append(seed)
    if not done:
        raise ValueError(
            f"no seed of {list(plan.seeds)} is finished in {run_dir} (searched, trained and "
            "timed): nothing to report yet"
        )
    for row in rows:
        row.pop("spec")
    results = _results(
        dataclasses.replace(plan, seeds=tuple(done)), budgets, rows, tables, test_images, started
    )
    results["seeds_unfinished"] = [s for s in plan.seeds if s not in done]
    _write_report(run_dir, results)
    return results


def _check_budgets(run_dir: Path, plan: EqualLatencyPlan, budgets: dict[str, Any]) -> None:
    missing = [width_label(w) for w in plan.widths if width_label(w) not in budgets]
    if missing:
        raise ValueError(
            f"{run_dir / 'budgets.json'} has no budget for {missing}: it was measured for other "
            "widths; use another --run_dir (or delete the file to measure every budget again)"
        )


def _planned_nets(plan: EqualLatencyPlan) -> list[tuple[str, str, float]]:
    """(label, family, width) of each net a seed trains, in the order it trains them."""
    middle = sorted(plan.widths)[len(plan.widths) // 2]
    nets = []
    for width in plan.widths:
        w = width_label(width)
        nets += [
            (f"densenas_{w}", "DenseNAS", width),
            (f"random_{w}", "random search", width),
            (f"mobilenet_v2_{w}", "MobileNetV2", width),
        ]
        if plan.fixed_block and width == middle:
            nets.append((f"fixed_block_{w}", "fixed-block", width))
    return nets


def _recorded_info(seed_dir: Path, label: str, family: str) -> dict[str, Any]:
    if family == "MobileNetV2":
        return {}
    if family == "random search":
        record = seed_dir / label / "result.json"
    else:
        record = seed_dir / "searched" / f"{label}.json"
    return json.loads(record.read_text())["info"] if record.is_file() else {}


def _row(
    label, family, width, spec, info, metrics, tables, budgets, seed, model_dir
) -> dict[str, Any]:
    table = tables.get(spec.provenance.get("search_space", "fashion_mnist"))
    cost = count_costs(spec)
    return {
        "net": label,
        "family": family,
        "seed": seed,
        "width": width,
        "budget_ms": budgets[width_label(width)]["target_ms"],
        "arch": spec.to_block_string(),
        "test_accuracy": metrics["test_accuracy"],
        "model_dir": str(model_dir),
        "spec": spec,
        "predicted_ms": None if family == "MobileNetV2" else table.predicted_ms(spec),
        "params": cost.params,
        "mult_adds": cost.mult_adds,
        **info,
    }


def _timed(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its net's measured latency and the machine that timed it."""
    model_dir = Path(row.pop("model_dir"))
    record = json.loads((model_dir / "latency.json").read_text())
    row["tflite_ms"] = float(record["tflite_ms"])
    row["timed_on"] = record.get("machine", "")
    return row


def _results(plan, budgets, rows, tables, test_images, started) -> dict[str, Any]:
    summary = compare.summarise(rows)
    for s in summary:
        first = next(r for r in rows if r["net"] == s["net"])
        s["width"], s["budget_ms"] = first["width"], first["budget_ms"]
        s["predicted_ms_mean"] = float(
            np.mean([r["predicted_ms"] for r in rows if r["net"] == s["net"]])
            if first["predicted_ms"] is not None
            else np.nan
        )
    return {
        "plan": dataclasses.asdict(plan),
        "budgets": budgets,
        "rows": rows,
        "summary": summary,
        "verdicts": verdicts(summary, plan.widths),
        "budget_held": budget_held(rows),
        "test_images": test_images,
        "latency_tables": {k: str(v) for k, v in tables.items()},
        "this_run_wall_time_s": time.time() - started,
    }


def _write_report(run_dir: Path, results: dict[str, Any]) -> None:
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(run_dir / "equal_latency.md", format_equal_latency(results) + "\n")
    write_bytes_atomic(run_dir / "equal_latency.png", plot_equal_latency(results))


def _run_seed(run_dir, plan, seed, tables, budgets, data, log) -> list[dict[str, Any]]:
    loaded = {name: LatencyTable.load(path) for name, path in tables.items()}
    specs: dict[str, ArchSpec] = {}
    infos: dict[str, dict[str, Any]] = {}

    def search(label, space, width) -> None:
        target = budgets[width_label(width)]["target_ms"]
        record = run_dir / "searched" / f"{label}.json"
        if record.is_file():  # finished before: its net, without the search's directory
            saved = json.loads(record.read_text())
            log(f"== seed {seed}: search {label} finished before ({record})")
            specs[label] = ArchSpec.from_dict(saved["arch"], source=str(record))
            infos[label] = saved["info"]
            return
        overrides = (
            f"space={space}",
            f"seed={seed}",
            f"latency_table={tables[space]}",
            "latency_check=false",
            "objective.kind=budget",
            f"objective.target_ms={target!r}",
        )
        config = load_search_config(plan.search_config, plan.search_overrides + overrides)
        log(f"== seed {seed}: search {label} (budget {target:.4f} ms)")
        result = run_search(config, run_dir / label, log=log)
        info = {"search_wall_time_s": result.summary["wall_time_s"]}
        if result.summary.get("path_margin") is not None:
            info["path_margin"] = result.summary["path_margin"]
        # From the final checkpoint under the run's budget and min_fraction: the
        # net the search derives now, also for a search finished by an older
        # derivation (the checkpoint holds the same alpha and beta).
        derived = derive_from_checkpoint(run_dir / label)
        # The search's own name, and no checkpoint path in the provenance: the spec a
        # training records must not change with how run_dir is spelled.
        provenance = {k: v for k, v in derived.provenance.items() if k != "checkpoint"}
        spec = dataclasses.replace(derived, name=result.arch.name, provenance=provenance)
        band = spec.provenance["budget"].get("band")
        if band:
            info["most_probable_within_budget_ms"] = band["most_probable_within_budget_ms"]
        record.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            record, json.dumps({"arch": spec.to_dict(), "info": info}, indent=2) + "\n"
        )
        specs[label], infos[label] = spec, info

    config = load_search_config(plan.search_config, plan.search_overrides)
    weight_ids, arch_ids = split_indices(len(data.train_labels), 0.2, seed)
    planned = _planned_nets(plan)
    for label, family, width in planned:
        target = budgets[width_label(width)]["target_ms"]
        if family == "DenseNAS":
            search(label, "fashion_mnist", width)
        elif family == "fixed-block":
            search(label, "fixed_block_fashion", width)
        elif family == "MobileNetV2":
            specs[label], infos[label] = mobilenet_v2_fashion(width), {}
        else:
            log(
                f"== seed {seed}: random search {width_label(width)} within [{plan.band}, 1] x {target:.4f} ms"
            )
            specs[label], infos[label] = compare.random_search(
                run_dir / label,
                "fashion_mnist",
                (plan.band * target, target),
                compare._search_mult_adds(config),
                data,
                weight_ids,
                arch_ids,
                plan,
                log,
                table=loaded["fashion_mnist"],
                seed=seed,
            )

    source = {
        "dataset": "fashion_mnist",
        "train_limit": plan.train_limit,
        "test_limit": plan.test_limit,
        "data_seed": plan.seed,
    }
    rows = []
    for label, family, width in planned:
        spec = specs[label]
        log(f"== seed {seed}: retrain {label}: {spec.to_block_string()}")
        arch_file = run_dir / "archs" / f"{label}.json"
        if not arch_file.is_file() or arch_file.read_text() != spec.to_json():
            spec.save(arch_file)  # a resumed run rewrites nothing
        model_dir = run_dir / "train" / label
        metrics = train(
            spec, data, model_dir,
            TrainConfig(epochs=plan.train_epochs, seed=seed), data_source=source, log=log,
        )  # fmt: skip
        rows.append(
            _row(
                label, family, width, spec, infos[label], metrics, loaded, budgets, seed, model_dir
            )
        )
    return rows


def verdicts(summary: list[dict[str, Any]], widths) -> list[dict[str, Any]]:
    """Per budget, DenseNAS against each other method at that budget: the
    accuracy difference, its standard error and the two-standard-error verdict."""
    out = []
    for width in widths:
        here = {s["family"]: s for s in summary if s["width"] == width}
        dense = here.get("DenseNAS")
        if dense is None:
            continue
        for family in FAMILIES[1:]:
            other = here.get(family)
            if other is None:
                continue
            diff = dense["test_accuracy_mean"] - other["test_accuracy_mean"]
            se = float(np.hypot(dense["test_accuracy_se"], other["test_accuracy_se"]))
            if not np.isfinite(se):
                verdict = "one seed: no standard error, no verdict"
            elif diff > 2 * se:
                verdict = "DenseNAS wins (more than two standard errors)"
            elif diff < -2 * se:
                verdict = f"DenseNAS loses to {family} (more than two standard errors)"
            else:
                verdict = "within two standard errors: no difference shown"
            out.append(
                {
                    "budget": width_label(width),
                    "budget_ms": dense["budget_ms"],
                    "against": family,
                    "difference_points": 100 * diff,
                    "standard_error_points": 100 * se,
                    "densenas_ms": dense["tflite_ms_mean"],
                    "other_ms": other["tflite_ms_mean"],
                    "verdict": verdict,
                }
            )
    return out


def _in_band(predicted_fraction: float) -> bool:
    """A prediction within [LOW, 1] x the budget (the criterion the stability tool uses)."""
    return LOW - 1e-9 <= predicted_fraction <= 1 + 1e-9


def _near(measured_fraction: float) -> bool:
    """A measurement within MEASURED_TOLERANCE of the budget (or of the net beside)."""
    return abs(measured_fraction - 1) <= MEASURED_TOLERANCE


def budget_held(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per searched net (DenseNAS and fixed-block) and seed: its budget T, its
    table-predicted and measured latency as fractions of T, whether the
    prediction is within [LOW, 1] x T and the measurement within 10 % of T,
    and its measured latency over that of the seed's MobileNetV2 at the same
    width (timed in the same rounds, so free of drift between timings)."""
    beside = {(r["seed"], r["width"]): r["tflite_ms"] for r in rows if r["family"] == "MobileNetV2"}
    out = []
    for r in rows:
        if r["family"] not in ("DenseNAS", "fixed-block"):
            continue
        target, predicted, measured = r["budget_ms"], r["predicted_ms"], r["tflite_ms"]
        mnv2 = beside.get((r["seed"], r["width"]))
        out.append(
            {
                "net": r["net"],
                "seed": r["seed"],
                "budget": width_label(r["width"]),
                "budget_ms": target,
                "predicted_ms": predicted,
                "predicted_fraction": predicted / target,
                "measured_ms": measured,
                "measured_fraction": measured / target,
                "mobilenet_v2_ms": mnv2,
                "measured_over_mobilenet_v2": None if mnv2 is None else measured / mnv2,
                "predicted_in_band": _in_band(predicted / target),
                "measured_within_10_percent": _near(measured / target),
            }
        )
    return out


def rederived_budget_held(
    run_dir: str | Path,
    plan: EqualLatencyPlan = EqualLatencyPlan(),
    min_fractions: tuple[float, ...] = (0.9, 0.95),
    rounds: int = 5,
    runs: int = 200,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Every DenseNAS search of the run whose checkpoint is here, re-derived
    under its budget at each ``min_fraction`` (no new search), and timed with
    MobileNetV2 at each budget's width in the same interleaved rounds (float
    TFLite, 1 thread, batch 1): how the lower edge of the band moves the
    measured latency against the budget. Written to ``run_dir/budget_held.json``
    and ``.md``.

    A search whose checkpoint is not here (run on another machine) keeps the
    nets an earlier ``run_dir/budget_held.json`` derived for it, at the same
    budget and for every min_fraction asked; they are timed again with the
    rest and marked ``carried``. Raises ValueError when no net is left."""
    run_dir = Path(run_dir)
    budgets_file = run_dir / "budgets.json"
    if not budgets_file.is_file():
        raise ValueError(f"{run_dir} holds no budgets.json: no equal-latency run has started there")
    budgets = json.loads(budgets_file.read_text())
    _check_budgets(run_dir, plan, budgets)
    earlier_file = run_dir / "budget_held.json"
    earlier = {}
    if earlier_file.is_file():
        for e in json.loads(earlier_file.read_text()).get("rows", []):
            earlier[(e["seed"], e["budget"], float(e["min_fraction"]), e["budget_ms"])] = e
    specs: dict[str, ArchSpec] = {}
    entries = []
    space = load_space("fashion_mnist")
    for width in plan.widths:
        w = width_label(width)
        specs[f"mobilenet_v2_{w}"] = mobilenet_v2_fashion(width)
        for seed in plan.seeds:
            search_dir = run_dir / f"seed{seed}" / f"densenas_{w}"
            if not (search_dir / "ckpt").is_dir():
                keys = [(seed, w, float(f), budgets[w]["target_ms"]) for f in min_fractions]
                if not all(k in earlier for k in keys):
                    log(
                        f"{search_dir}: no checkpoint here (not run on this machine, or "
                        f"unfinished) and no net for it in {earlier_file}; left out"
                    )
                    continue
                log(f"{search_dir}: no checkpoint here; its nets from {earlier_file}")
                for k in keys:
                    e = earlier[k]
                    specs[e["name"]] = ArchSpec.from_block_string(e["arch"], name=e["name"])
                    entries.append(
                        {f: e[f] for f in ("name", "seed", "budget", "min_fraction", "budget_ms",
                                           "predicted_ms", "arch", "decisions")}
                        | {"carried": True}
                    )  # fmt: skip
                continue
            table = LatencyTable.load(search_dir / "latency_table.json")
            for fraction in min_fractions:
                spec = derive_from_checkpoint(search_dir, min_fraction=fraction)
                name = f"seed{seed}_{w}_f{fraction:g}"
                specs[name] = spec
                entries.append(
                    {"name": name, "seed": seed, "budget": w, "min_fraction": fraction,
                     "budget_ms": budgets[w]["target_ms"], "predicted_ms": table.predicted_ms(spec),
                     "arch": spec.to_block_string(),
                     "decisions": decisions(space, spec.provenance["path"], spec)}
                )  # fmt: skip
    if not entries:
        raise ValueError(
            f"no DenseNAS search of {run_dir} has its checkpoint here, nor a net in an "
            f"earlier {earlier_file.name}: nothing to re-derive"
        )
    log(f"timing {len(specs)} net(s) in {rounds} interleaved round(s) of {runs} runs")
    timed = {name: float(np.median(m)) for name, m in time_nets(specs, rounds, runs, log).items()}
    for e in entries:
        target, mnv2 = e["budget_ms"], timed[f"mobilenet_v2_{e['budget']}"]
        e.update(
            measured_ms=timed[e["name"]],
            mobilenet_v2_ms=mnv2,
            predicted_fraction=e["predicted_ms"] / target,
            measured_fraction=timed[e["name"]] / target,
            measured_over_mobilenet_v2=timed[e["name"]] / mnv2,
        )
    result = {
        "run_dir": str(run_dir),
        "machine": machine_description(),
        "rounds": rounds,
        "runs": runs,
        "budgets": {w: b["target_ms"] for w, b in budgets.items()},
        "mobilenet_v2_ms": {
            w: timed[f"mobilenet_v2_{w}"] for w in budgets if f"mobilenet_v2_{w}" in timed
        },
        "rows": entries,
        "agreement": [],
    }
    # Per budget and min_fraction, over the seeds: how many decisions all agree on.
    for w in budgets:
        for fraction in min_fractions:
            group = [e for e in entries if e["budget"] == w and e["min_fraction"] == fraction]
            if len(group) > 1:
                result["agreement"].append(
                    {"budget": w, "min_fraction": fraction, "seeds": [e["seed"] for e in group],
                     **agreement([e["decisions"] for e in group])}
                )  # fmt: skip
    write_text_atomic(run_dir / "budget_held.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(run_dir / "budget_held.md", format_rederived_budget_held(result) + "\n")
    return result


def format_rederived_budget_held(r: dict[str, Any]) -> str:
    lines = [
        f"Each DenseNAS search re-derived under its budget T at each min_fraction; predicted on "
        f"its table, measured on {r['machine']} as float TFLite, 1 thread, median of "
        f"{r['rounds']} interleaved round(s) of {r['runs']} runs, with MobileNetV2 at each width "
        "in the same rounds.",
        "",
        "| budget T | seed | min_fraction | predicted ms (x T) | measured ms (x T) | "
        "net / MobileNetV2 beside | net |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = sorted(r["rows"], key=lambda e: (e["budget_ms"], e["min_fraction"], e["seed"]))
    for e in rows:
        lines.append(
            f"| {e['budget']} ({e['budget_ms']:.4f}) | {e['seed']}{'*' if e.get('carried') else ''}"
            f" | {e['min_fraction']:g} | "
            f"{e['predicted_ms']:.4f} ({e['predicted_fraction']:.2f}) | "
            f"{e['measured_ms']:.4f} ({e['measured_fraction']:.2f}) | "
            f"{e['measured_over_mobilenet_v2']:.2f} | `{e['arch']}` |"
        )
    beside = ", ".join(
        f"{w} {ms:.4f} ms ({ms / r['budgets'][w]:.2f} T)" for w, ms in r["mobilenet_v2_ms"].items()
    )
    lines += ["", f"MobileNetV2 in the same rounds: {beside}.", ""]
    if any(e.get("carried") for e in rows):
        lines += [
            "\\* Derived earlier, from a checkpoint not on this machine (the earlier "
            "budget_held.json); timed again here with the rest.",
            "",
        ]
    for fraction in sorted({e["min_fraction"] for e in rows}):
        group = [e for e in rows if e["min_fraction"] == fraction]
        band = sum(_in_band(e["predicted_fraction"]) for e in group)
        near = sum(_near(e["measured_fraction"]) for e in group)
        near_beside = sum(_near(e["measured_over_mobilenet_v2"]) for e in group)
        lines.append(
            f"- min_fraction {fraction:g}: predicted within [0.9, 1] x T {band} of {len(group)}; "
            f"measured within 10 % of T {near} of {len(group)}, of MobileNetV2 timed beside "
            f"{near_beside} of {len(group)}; measured / T "
            f"{min(e['measured_fraction'] for e in group):.2f}-"
            f"{max(e['measured_fraction'] for e in group):.2f}."
        )
    if r.get("agreement"):
        lines += ["", "Decisions all seeds agree on:", ""]
        for a in r["agreement"]:
            lines.append(
                f"- {a['budget']}, min_fraction {a['min_fraction']:g} (seeds {a['seeds']}): "
                f"blocks taken or skipped {a['blocks_agreeing']} of {a['blocks']}, ops of the "
                f"layers all have {a['shared_layers_agreeing']} of {a['shared_layers']}."
            )
    return "\n".join(lines)


def format_equal_latency(results: dict[str, Any]) -> str:
    seeds = results["plan"]["seeds"]

    def pm(mean, se, scale=1.0, digits=2):
        if not np.isfinite(se):
            return f"{scale * mean:.{digits}f}"
        return f"{scale * mean:.{digits}f} ± {scale * se:.{digits}f}"

    lines = [
        f"Budgets: MobileNetV2's measured latency at each width; {len(seeds)} seed(s) "
        f"{list(seeds)}; mean ± standard error over seeds; {results['test_images']} test images.",
        "",
        "| budget | net | family | test accuracy (%) | measured ms | predicted ms |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(
        results["summary"], key=lambda s: (s["budget_ms"], FAMILIES.index(s["family"]))
    ):
        predicted = s["predicted_ms_mean"]
        lines.append(
            f"| {width_label(s['width'])} ({s['budget_ms']:.3f} ms) | {s['net']} | {s['family']} | "
            f"{pm(s['test_accuracy_mean'], s['test_accuracy_se'], 100)} | "
            f"{pm(s['tflite_ms_mean'], s['tflite_ms_se'], 1, 3)} | "
            f"{'' if not np.isfinite(predicted) else f'{predicted:.3f}'} |"
        )
    machines = sorted({r.get("timed_on", "") for r in results["rows"]} - {""})
    if machines:
        lines += ["", f"Timed on: {'; '.join(machines)}."]
    lines += ["", "Verdicts (two-standard-error rule):", ""]
    for v in results["verdicts"]:
        lines.append(
            f"- {v['budget']} ({v['budget_ms']:.3f} ms): DenseNAS ({v['densenas_ms']:.3f} ms) vs "
            f"{v['against']} ({v['other_ms']:.3f} ms): {v['difference_points']:+.2f} points "
            f"(standard error {v['standard_error_points']:.2f}); {v['verdict']}"
        )
    held = results.get("budget_held", [])
    if held:
        lines += [
            "",
            "The budget held: each searched net's table-predicted and measured latency "
            "(fraction of the budget T), and its measured latency over that of the seed's "
            "MobileNetV2 at the same width, timed in the same rounds:",
            "",
            "| budget T | net | seed | predicted ms (x T) | measured ms (x T) | "
            "MobileNetV2 beside (ms) | net / MobileNetV2 |",
            "|---|---|---|---|---|---|---|",
        ]
        for h in sorted(held, key=lambda h: (h["budget_ms"], h["net"], h["seed"])):
            mnv2, ratio = h["mobilenet_v2_ms"], h["measured_over_mobilenet_v2"]
            lines.append(
                f"| {h['budget']} ({h['budget_ms']:.4f}) | {h['net']} | {h['seed']} | "
                f"{h['predicted_ms']:.4f} ({h['predicted_fraction']:.2f}) | "
                f"{h['measured_ms']:.4f} ({h['measured_fraction']:.2f}) | "
                f"{'' if mnv2 is None else f'{mnv2:.4f}'} | "
                f"{'' if ratio is None else f'{ratio:.2f}'} |"
            )
        lines += [
            "",
            f"Predicted within [0.9, 1] x T: {sum(h['predicted_in_band'] for h in held)} of "
            f"{len(held)}; measured within 10 % of T: "
            f"{sum(h['measured_within_10_percent'] for h in held)} of {len(held)}.",
        ]
    if results.get("seeds_unfinished"):
        lines += [
            "",
            f"Partial: seeds {results['seeds_unfinished']} are not finished and are left out.",
        ]
    return "\n".join(lines)


def plot_equal_latency(results: dict[str, Any]) -> bytes:
    return compare.plot_families(
        results["summary"],
        results["test_images"],
        f"Fashion-MNIST at equal latency ({len(results['plan']['seeds'])} seed(s))",
        lines_ms=tuple(b["target_ms"] for b in results["budgets"].values()),
        xlabel="TFLite latency, 1 thread, batch 1 (ms, measured; grey: budgets)",
    )
