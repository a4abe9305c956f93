"""The whole product in one run: search -> derive -> retrain -> export -> measure.

Each stage keeps its results in its own part of the run directory and is
skipped when they are already there, so an interrupted run resumes where it
stopped. The last stage prints one table (``format_report``) and writes it to
``report.json`` and ``report.md``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.files import cached_json, write_text_atomic
from densenas_tf.data.sources import load_image_data
from densenas_tf.exporting.export import (
    TFLiteRunner,
    export_serving,
    export_tflite,
    load_trained_model,
)
from densenas_tf.latency.check import check_table_here, scaled_to_this_machine
from densenas_tf.latency.expected import latency_costs
from densenas_tf.latency.measure import (
    arch_timer,
    build_table,
    mobilenet_v2_budget,
    time_tflite,
)
from densenas_tf.latency.report import sample_nets
from densenas_tf.latency.table import (
    LatencyTable,
    LatencyTableError,
    default_table_path,
    quantization_of,
)
from densenas_tf.search.config import load_search_config
from densenas_tf.search.run import run_search
from densenas_tf.space.baselines import mobilenet_v2_fashion
from densenas_tf.space.budget import BudgetError
from densenas_tf.space.derive import arch_from_path
from densenas_tf.space.spaces import load_space
from densenas_tf.train.trainer import TrainConfig, train

# Interleaved rounds of the final latency measurement (each of latency_runs runs).
MEASURE_ROUNDS = 5


def run_main_job(
    run_dir: str | Path,
    search_config: str = "fashion_mnist_quick",
    search_overrides: tuple[str, ...] = (),
    train_epochs: int = 2,
    train_limit: int | None = None,
    test_limit: int | None = None,
    latency_runs: int = 200,
    latency_table: str | None = None,
    target_ms: float | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    int8_latency_table: str | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the whole job in run_dir; returns the report.

    Without ``latency_table`` the search optimises the latency of the machine
    the job runs on: the space's shipped table when it names this kind of
    machine and passes the check against whole nets timed here, else a table
    measured here first (``_table_for_this_machine``, cached in
    ``run_dir/latency``); a given table is checked against whole nets measured
    here when it names this kind of machine.

    The search aims at a latency budget (objective kind ``budget``):
    ``target_ms``, or by default the measured latency of MobileNetV2 x0.75
    (``space.baselines``) as float TFLite, one thread, batch 1, on this
    machine (cached in ``run_dir/latency/budget.json``).

    The report gives the int8 net's latency predicted by an int8 table
    (``int8_latency_table``, by default the shipped one of the space when
    there is one) beside its measured latency."""

    run_dir = Path(run_dir)
    times: dict[str, float] = {}
    started = time.time()

    def stage(name: str):
        log(f"== {name}")
        times.setdefault(name, time.time())

    def done(name: str):
        times[name] = time.time() - times[name]

    config = load_search_config(search_config, search_overrides)
    table_choice = {"how": "given"}
    if latency_table is None:
        stage("latency table")
        space = load_space(config.space)
        table_choice = cached_json(
            run_dir / "latency" / "table_choice.json",
            lambda: _table_for_this_machine(space, run_dir / "latency", log),
        )
        table_path = table_choice["path"]
        log(f"latency table: {table_path} ({table_choice['how']})")
        # Checked or measured here moments ago: the search need not check it again.
        overrides = (f"latency_table={table_path}", "latency_check=false")
        done("latency table")
    else:
        overrides = (f"latency_table={latency_table}",)
    if target_ms is not None:
        budget = {"target_ms": float(target_ms), "source": "--target_ms"}
    else:
        budget = cached_json(
            run_dir / "latency" / "budget.json",
            lambda: mobilenet_v2_budget(0.75, latency_runs, log),
        )
    log(f"latency budget: {budget['target_ms']:.3f} ms ({budget['source']})")
    if latency_table is None and table_choice["how"].startswith("shipped"):
        # Checked on random nets, most of them far slower than the budget: checked
        # again on nets near the budget, where the derived net will be.
        stage("latency near the budget")
        table_choice = cached_json(
            run_dir / "latency" / "table_choice_near_budget.json",
            lambda: _near_budget_table(
                load_space(config.space),
                table_choice,
                budget["target_ms"],
                run_dir / "latency",
                log,
            ),
        )
        table_path = table_choice["path"]
        log(f"latency table near the budget: {table_path} ({table_choice['how']})")
        overrides = (f"latency_table={table_path}", "latency_check=false")
        done("latency near the budget")
    overrides += ("objective.kind=budget", f"objective.target_ms={budget['target_ms']!r}")
    config = load_search_config(search_config, (*search_overrides, *overrides))
    stage("search")
    searched = run_search(config, run_dir / "search", log=log)
    spec, summary = searched.arch, searched.summary
    table = LatencyTable.load(run_dir / "search" / "latency_table.json")
    int8_table, int8_predicted = _int8_prediction(spec, config.space, int8_latency_table, log)
    if int8_latency_table is None:  # the shipped one: scaled as the float table was
        int8_table, int8_predicted = _scaled_like_float(int8_table, int8_predicted, table_choice)
    done("search")

    stage("train")
    source = {
        "dataset": config.data.dataset,
        "data_dir": config.data.data_dir,
        "train_limit": train_limit,
        "test_limit": test_limit,
    }
    data = load_image_data(**source)
    metrics = train(
        spec, data, run_dir / "train", TrainConfig(epochs=train_epochs), data_source=source, log=log
    )
    model = load_trained_model(run_dir / "train" / "model.keras")
    done("train")

    stage("export")
    out = run_dir / "export"
    check = data.test_images[:1000], data.test_labels[:1000]
    # TensorFlow Serving's layout, out/serving/<version>/, with the data's class names.
    saved = cached_json(
        out / "serving.json",
        lambda: export_serving(
            model, out / "serving", check[0][:500], class_names=data.class_names, log=log
        ),
    )
    tflite = {
        q: cached_json(
            out / f"model_{q}.json",
            lambda q=q: export_tflite(
                model,
                out / f"model_{q}.tflite",
                q,
                *check,
                calibration_images=data.train_images[:200],
                log=log,
            ),
        )
        for q in ("none", "int8")
    }
    done("export")

    stage("measure")

    def measure() -> dict[str, Any]:
        # Interleaved rounds, each timing every net once, so a slow moment falls on all
        # alike; each net's figure is its least round median (the quietest moment's, as
        # the table's entries and its check take theirs). MobileNetV2 x0.75 runs beside
        # the nets when it gave the budget: the budget measured again at this moment.
        contents = {q: (out / f"model_{q}.tflite").read_bytes() for q in ("none", "int8")}
        timers = {
            q: lambda runs, c=content: time_tflite(c, threads=1, warmup=20, runs=runs).median_ms
            for q, content in contents.items()
        }
        if target_ms is None:
            timers["budget_net"] = arch_timer(mobilenet_v2_fashion(0.75), "tflite", threads=1)
        rounds = {name: [] for name in timers}
        for _ in range(MEASURE_ROUNDS):
            for name, timer in timers.items():
                rounds[name].append(timer(latency_runs))
        result: dict[str, Any] = {}
        for q, content in contents.items():
            predicted = TFLiteRunner(content)(data.test_images).argmax(-1)
            result[q] = {
                "latency_ms": min(rounds[q]),
                "round_medians_ms": rounds[q],
                "test_accuracy": float(np.mean(predicted == data.test_labels)),
            }
        if "budget_net" in rounds:
            result["budget_net"] = {
                "latency_ms": min(rounds["budget_net"]),
                "round_medians_ms": rounds["budget_net"],
                "arch": budget.get("arch"),
            }
        return result

    measured = cached_json(out / "measured.json", measure)
    done("measure")

    report = {
        "machine": f"{platform.machine()}, {_cpu_name()}, TF {_tf_version()}",
        "arch": spec.to_block_string(),
        "path": summary.get("path"),
        "path_margin": summary.get("path_margin"),
        "runner_up_path": summary.get("runner_up_path"),
        "min_op_margin": summary.get("min_op_margin"),
        "near_ties": len(summary.get("near_ties") or []),
        "warmup_end": summary.get("warmup_end"),
        "latency_table": summary.get("latency_table", {}).get("path"),
        "latency_device": summary.get("latency_table", {}).get("device"),
        "latency_table_how": table_choice["how"],
        "keras_test_accuracy": metrics["test_accuracy"],
        "int8_test_accuracy": measured["int8"]["test_accuracy"],
        "float_tflite_test_accuracy": measured["none"]["test_accuracy"],
        "test_images": len(data.test_labels),
        "budget_ms": budget["target_ms"],
        "budget_source": budget["source"],
        "predicted_latency_ms": table.predicted_ms(spec),
        "measured_latency_ms": measured["none"]["latency_ms"],
        "measured_int8_latency_ms": measured["int8"]["latency_ms"],
        "budget_net_measured_ms": (
            measured.get("budget_net", {}).get("latency_ms") if target_ms is None else None
        ),
        "predicted_int8_latency_ms": int8_predicted,
        "int8_latency_table": int8_table,
        "params": metrics["params"],
        "mult_adds": metrics["mult_adds"],
        "saved_model_bytes": saved["size_bytes"],
        "float_tflite_bytes": tflite["none"]["size_bytes"],
        "int8_tflite_bytes": tflite["int8"]["size_bytes"],
        "int8_top1_agreement": tflite["int8"]["top1_agreement"],
        "float_tflite_max_abs_diff": tflite["none"]["max_abs_diff_logits"],
        "saved_model_max_abs_diff": saved["max_abs_diff_logits"],
        "artefacts": {
            "search": str(run_dir / "search"),
            "arch": str(run_dir / "search" / "arch.json"),
            "keras_model": str(run_dir / "train" / "model.keras"),
            "saved_model": str(out / "serving" / str(saved["version"])),
            "float_tflite": str(out / "model_none.tflite"),
            "int8_tflite": str(out / "model_int8.tflite"),
            "tensorboard": f"{run_dir / 'search' / 'tensorboard'}, {run_dir / 'train' / 'tensorboard'}",
        },
        "search_wall_time_s": summary.get("wall_time_s"),
        "train_wall_time_s": metrics["wall_time_s"],
        "stage_times_s": times,
        "this_run_wall_time_s": time.time() - started,
    }
    text = format_report(report)
    write_text_atomic(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(run_dir / "report.md", text + "\n")
    return report


def _table_for_this_machine(space, out_dir: Path, log) -> dict[str, str]:
    """The float latency table the job's search uses: the shipped one of the
    space when it was measured on this kind of machine and predicts whole nets
    timed here within ``check.MAX_MAPE_PERCENT`` (``check_table_here``: 5 nets,
    3 interleaved rounds); else, when one factor brings it within that on the
    same nets (this machine runs slower or faster as a whole), the shipped
    table scaled by it (``scaled_to_this_machine``, written to ``out_dir``);
    else one measured here into ``out_dir`` (minutes). Returns
    ``{"path": ..., "how": ...}``."""
    shipped = default_table_path(space.name)
    reason = f"no shipped table {shipped}"
    if shipped.is_file():
        table = LatencyTable.load(shipped)
        try:
            check = check_table_here(space, table, str(shipped), log=log)
        except LatencyTableError as err:
            check, reason = None, f"the shipped table failed its check here: {err}"
            timed = getattr(err, "check", None)
            fitted = scaled_to_this_machine(table, timed) if timed else None
            if timed:
                write_text_atomic(out_dir / "shipped_table_check.json", json.dumps(timed, indent=2))
            if fitted is not None:
                scaled, fit = fitted
                path = out_dir / f"{shipped.stem}_scaled.json"
                scaled.save(path)
                how = (
                    f"scaled x{fit['factor']:.3f} to this machine: "
                    f"{fit['mape_percent_before']:.1f} % mean error over {fit['nets']} whole nets "
                    f"before, {fit['mape_percent_after']:.1f} % after"
                )
                log(f"latency table {path}: the shipped one {how}")
                return {"path": str(path), "how": f"shipped, {how}", "factor": fit["factor"]}
        else:
            if check["checked"]:
                write_text_atomic(out_dir / "shipped_table_check.json", json.dumps(check, indent=2))
                return {
                    "path": str(shipped),
                    "how": f"shipped, checked here: {check['mape_percent']:.1f} % mean error "
                    f"over {check['nets']} whole nets",
                }
            reason = f"the shipped table was measured on {check['device']!r}, not here"
    log(f"measuring a latency table on this machine ({reason})")
    path = out_dir / default_table_path(space.name).name
    build_table(space, path, log=log)
    return {"path": str(path), "how": "measured here by this job"}


NEAR_BUDGET_NETS = 5


def _near_budget_table(space, choice: dict[str, Any], budget_ms: float, out_dir: Path, log):
    """The shipped table (as chosen, perhaps scaled) checked again on
    ``NEAR_BUDGET_NETS`` nets of the space spread over [0.8, 1] x the budget
    as it predicts them, timed here as ``check_table_here`` times: kept when it
    predicts them within ``check.MAX_MAPE_PERCENT``; else scaled by one more
    factor fitted on them when that brings them within it (the ops of small
    nets can run faster or slower here, against those of large ones, than on
    the table's machine); else a table is measured here. Returns the choice
    (``path``, ``how``, ``factor``: the whole scale from the shipped table)."""
    table = LatencyTable.load(choice["path"])
    try:
        picks = sample_nets(
            space, latency_costs(space, table), NEAR_BUDGET_NETS, 0.8 * budget_ms, budget_ms, seed=1
        )
    except BudgetError as err:
        log(f"the table is not checked near the budget: {err}")
        return choice
    nets = [
        arch_from_path(space, c.path, c.head_choice, c.stack_choice, name=f"near_budget_{k}")
        for k, c in enumerate(picks)
    ]
    try:
        check = check_table_here(space, table, choice["path"], log=log, nets=nets)
    except LatencyTableError as err:
        timed = err.check
        write_text_atomic(out_dir / "near_budget_check.json", json.dumps(timed, indent=2))
        fitted = scaled_to_this_machine(table, timed)
        if fitted is None:
            log(f"measuring a latency table on this machine (near the budget: {err})")
            path = out_dir / default_table_path(space.name).name
            build_table(space, path, log=log)
            return {
                "path": str(path),
                "how": "measured here by this job (the shipped table missed nets near the budget)",
            }
        scaled, fit = fitted
        path = out_dir / f"{default_table_path(space.name).stem}_near_budget.json"
        scaled.save(path)
        factor = choice.get("factor", 1.0) * fit["factor"]
        how = (
            f"{choice['how']}; near the budget scaled x{fit['factor']:.3f} more: "
            f"{fit['mape_percent_before']:.1f} % mean error over {fit['nets']} nets in "
            f"[0.8, 1] x the budget before, {fit['mape_percent_after']:.1f} % after"
        )
        log(f"latency table {path}: {how}")
        return {"path": str(path), "how": how, "factor": factor}
    write_text_atomic(out_dir / "near_budget_check.json", json.dumps(check, indent=2))
    how = (
        f"{choice['how']}; near the budget: {check['mape_percent']:.1f} % mean error over "
        f"{check['nets']} nets in [0.8, 1] x the budget"
    )
    return {**choice, "how": how}


def _scaled_like_float(int8_table, int8_predicted, table_choice):
    """The shipped int8 table's prediction, scaled by the factor the shipped
    float table was scaled by (both measured on the same machine and day; the
    factor is this machine's speed against that day's), with its name saying so."""
    factor = table_choice.get("factor")
    if factor is None or int8_predicted is None:
        return int8_table, int8_predicted
    return f"{int8_table} (scaled x{factor:.3f} as the float table)", int8_predicted * factor


def _int8_prediction(
    spec, space_name: str, path: str | None, log
) -> tuple[str | None, float | None]:
    """(the int8 table, the net's latency it predicts), or (None, None) when
    the space has no int8 table; a given table that cannot serve is refused."""
    space = load_space(space_name)
    chosen = Path(path) if path else default_table_path(space.name, quantization="int8")
    if not chosen.is_file():
        if path:
            raise FileNotFoundError(f"int8 latency table {chosen}: no such file")
        log(f"no int8 latency table of {space.name} ({chosen}): the int8 net is measured only")
        return None, None
    int8 = LatencyTable.load(chosen)
    int8.check_space(space, path)
    if quantization_of(int8) != "int8":
        raise LatencyTableError(f"{chosen} is a table of {quantization_of(int8)} pieces, not int8")
    return str(chosen), int8.predicted_ms(spec)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def format_report(r: dict[str, Any]) -> str:
    mib = 1024 * 1024
    warmup = r.get("warmup_end") or {}
    rows = [
        ("architecture", "`" + r["arch"].replace("|", "\\|") + "`"),
        (
            "supernet accuracy when the architecture stage began (architecture split)",
            f"{warmup['supernet_accuracy']:.2%} after {warmup['warmup_epochs']} warm-up epochs"
            if warmup
            else "-",
        ),
        (
            "path margin over the runner-up (log-odds) / smallest op margin / near-ties",
            f"{r['path_margin']:.3f} (runner-up {r['runner_up_path']}) / "
            f"{r['min_op_margin']:.3f} / {r['near_ties']}"
            if r.get("path_margin") is not None
            else "-",
        ),
        (
            "test accuracy (Keras / float TFLite / int8 TFLite)",
            f"{r['keras_test_accuracy']:.2%} / {r['float_tflite_test_accuracy']:.2%} / "
            f"{r['int8_test_accuracy']:.2%} ({r['test_images']} images)",
        ),
        ("int8 top-1 agreement with Keras", f"{r['int8_top1_agreement']:.2%}"),
        (
            "latency, TFLite 1 thread batch 1: budget / predicted / measured float "
            "(predicted / measured int8)",
            f"{r['budget_ms']:.3f} / {r['predicted_latency_ms']:.3f} / "
            f"{r['measured_latency_ms']:.3f} ms ("
            + (
                "-"
                if r.get("predicted_int8_latency_ms") is None
                else f"{r['predicted_int8_latency_ms']:.3f}"
            )
            + f" / {r['measured_int8_latency_ms']:.3f} ms)",
        ),
        ("latency budget from", r["budget_source"]),
        (
            "the budget's net timed beside the float net at the end (the float net / it)",
            "-"
            if r.get("budget_net_measured_ms") is None
            else f"{r['budget_net_measured_ms']:.3f} ms "
            f"({r['measured_latency_ms'] / r['budget_net_measured_ms']:.2f}x)",
        ),
        ("parameters", f"{r['params']:,}"),
        ("multiply-adds", f"{r['mult_adds'] / 1e6:.2f} M"),
        (
            "sizes (SavedModel / float TFLite / int8 TFLite)",
            f"{r['saved_model_bytes'] / mib:.2f} / {r['float_tflite_bytes'] / mib:.3f} / "
            f"{r['int8_tflite_bytes'] / mib:.3f} MiB",
        ),
        (
            "export checks (max abs logit diff SavedModel / float TFLite)",
            f"{r['saved_model_max_abs_diff']:.1e} / {r['float_tflite_max_abs_diff']:.1e}",
        ),
        ("machine", r["machine"]),
        (
            "latency table (measured on; how chosen)",
            f"{r.get('latency_table')} ({r.get('latency_device')}; "
            f"{r.get('latency_table_how', 'given')})",
        ),
        ("int8 latency table", r.get("int8_latency_table") or "none for this space"),
        (
            "wall time (search / train / this run)",
            f"{r['search_wall_time_s'] / 60:.1f} / {r['train_wall_time_s'] / 60:.1f} / "
            f"{r['this_run_wall_time_s'] / 60:.1f} min",
        ),
    ]
    rows += [(f"artefact: {k}", v) for k, v in r["artefacts"].items()]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)
