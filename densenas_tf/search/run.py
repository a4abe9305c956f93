"""One search run in one directory: set-up, refusal of foreign runs
(``core.run_dir``), resume, summary."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core import run_dir as run_dirs
from densenas_tf.core.checkpoints import variable_key, variables_in
from densenas_tf.core.files import cached_json, write_text_atomic
from densenas_tf.core.run_dir import RunDirError
from densenas_tf.core.runtime import STRATEGIES, make_strategy  # noqa: F401 (re-exported)
from densenas_tf.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist
from densenas_tf.data.sources import DataError, open_stream, search_splits, split_indices
from densenas_tf.latency.check import check_table_here
from densenas_tf.latency.expected import latency_costs
from densenas_tf.latency.table import LatencyTable, LatencyTableError, default_table_path
from densenas_tf.nn.supernet import SuperNet
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.objectives import Objective
from densenas_tf.search.searcher import Searcher
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.budget import derive_within_budget
from densenas_tf.space.derive import derive_arch
from densenas_tf.space.spaces import SearchSpace, load_space


def load_search_data(
    config: SearchConfig,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[Any, Any]:
    """(weight split, architecture split) of the training images, deterministic by seed.

    Fashion-MNIST: two (uint8 images, int32 labels) pairs held in memory. A
    streaming source (``config.data.streamed``): two ``data_sources.SearchSplit``
    read from disk as the search goes, divided per class from the source's
    index (no pixels read for the division).
    """

    if config.data.streamed:
        return _streamed_search_data(config, log)
    if config.data.dataset != "fashion_mnist":
        raise DataError(
            f"unknown dataset {config.data.dataset!r}; the search reads 'fashion_mnist'"
        )
    images, labels = load_fashion_mnist("train", config.data.data_dir)
    order = np.random.default_rng(config.seed).permutation(len(images))
    if config.data.train_limit:
        order = order[: config.data.train_limit]
    images, labels = images[order], labels[order]
    weight_ids, arch_ids = split_indices(len(images), config.data.arch_fraction, config.seed)
    return (images[weight_ids], labels[weight_ids]), (images[arch_ids], labels[arch_ids])


# The share of a source without a test split that the search leaves out: the
# default test part of the retraining (cli --test_fraction, --data_seed 0).
SEARCH_HOLDS_OUT = 0.2


def open_search_source(config: SearchConfig):
    """The streaming source of a search config; the search reads its train part."""

    data = config.data
    return open_stream(
        tfds_name=data.tfds_name,
        tfds_data_dir=data.tfds_data_dir,
        image_folder=data.image_folder,
        tfrecord_dir=data.tfrecord_dir,
        image_size=data.image_size,
        class_list=data.class_list,
        # The test part that tools/train.py holds out by default (--test_fraction 0.2,
        # --data_seed 0) stays out of the search too: the net is never chosen on the
        # images it is tested on. Sources with a test split of their own keep it.
        test_fraction=SEARCH_HOLDS_OUT,
        seed=0,
        train_limit=data.train_limit,
        cache_dir=data.cache_dir,
    )


def _streamed_search_data(config: SearchConfig, log):

    source = open_search_source(config)
    log(
        f"search data: {source.name}, {source.num_train} images in {source.num_classes} "
        f"classes at {'x'.join(map(str, source.input_shape))}, streamed"
    )
    return search_splits(
        source,
        config.data.arch_fraction,
        config.seed,
        augment_weights=config.data.augment,
        stats_limit=config.data.stats_limit,
        log=log,
    )


def search_data_shape(weight_data) -> tuple[tuple[int, int, int], int]:
    """(input shape, class count) of the search data, known without reading pixels."""

    if hasattr(weight_data, "data"):  # a streamed SearchSplit
        return tuple(weight_data.data.input_shape), weight_data.data.num_classes
    images = weight_data[0] if isinstance(weight_data, tuple) else weight_data
    return tuple(int(d) for d in images.shape[1:]), len(FASHION_MNIST_CLASSES)


def check_search_data(space, config: SearchConfig, data) -> None:
    """Refuses a space whose input shape or class count differs from the search data's
    (labels beyond the space's classes would become all-zero targets). ``data`` is
    the weight split (or, for Fashion-MNIST, its images)."""

    shape, classes = search_data_shape(data)
    if tuple(space.input_shape) == shape and space.num_classes == classes:
        return
    source = (
        next(
            f"{k} {getattr(config.data, k)}"
            for k in ("tfds_name", "image_folder", "tfrecord_dir")
            if getattr(config.data, k)
        )
        if config.data.streamed
        else config.data.dataset
    )
    if config.data.streamed:
        made_from = (
            f"--image_folder={config.data.image_folder}"
            if config.data.image_folder
            else f"--input_size={shape[0]} --channels={shape[2]} --num_classes={classes}"
        )
        fix = (
            "make a space for them: densenas-make-space --like=fashion_mnist "
            f"{made_from} --out=my_space.yaml, then search it with "
            "--override=space=my_space.yaml --latency_table=TABLE.json (its table: "
            "densenas-build-lut --space=my_space.yaml --out=TABLE.json); or set "
            "data.image_size / data.class_list to match the space"
        )
    else:
        fix = (
            f"search a space with input_shape: {list(shape)} and num_classes: {classes} "
            "(e.g. --override=space=fashion_mnist)"
        )
    raise DataError(
        f"the space {space.name!r} takes {'x'.join(map(str, space.input_shape))} images in "
        f"{space.num_classes} classes but the search data ({source}) are "
        f"{'x'.join(map(str, shape))} images in {classes} classes; {fix}"
    )


# Config keys that change what is logged or how the steps are executed, not what
# is computed: a run directory resumes whatever they say (and one written before
# they existed resumes too).
LOGGING_ONLY_KEYS = ("summary_every_steps", "graph_steps")


def _identity(config: Any) -> Any:
    if not isinstance(config, dict):
        return config
    return {k: v for k, v in config.items() if k not in LOGGING_ONLY_KEYS}


def _same_config(saved: Path, config: SearchConfig) -> bool:
    try:
        found = json.loads(saved.read_text())
    except ValueError:  # no JSON: no config of this run
        return False
    return _identity(found) == _identity(json.loads(config.to_json()))


def prepare_run_dir(
    run_dir: Path,
    config: SearchConfig,
    overwrite: bool,
    log: Callable[[str], None] = lambda line: None,
) -> bool:
    """Checks the run directory (whose lock the caller holds) and marks it as a
    search's (``core.run_dir``); True when it already holds this finished run.
    A search with another config is deleted with ``overwrite`` (only the files
    a search writes), else refused; so is a directory of another kind of run,
    and one that is no run at all (never offered --overwrite)."""
    run_dirs.check_kind(run_dir, run_dirs.SEARCH)
    saved = run_dir / run_dirs.CONFIG_FILES[run_dirs.SEARCH]
    if saved.is_file():
        if not _same_config(saved, config):
            run_dirs.check_replaceable(run_dir, run_dirs.SEARCH)
            if not overwrite:
                raise RunDirError(
                    f"{run_dir} holds a run with another config ({saved}); pick another --run_dir "
                    f"or {run_dirs.overwrite_hint(run_dir, run_dirs.SEARCH)}"
                )
            log(f"--overwrite: deleting the run with another config in {run_dir}")
            run_dirs.delete_run(run_dir, run_dirs.SEARCH)
        elif (run_dir / "summary.json").is_file():
            run_dirs.claim(run_dir, run_dirs.SEARCH)
            return True
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dirs.claim(run_dir, run_dirs.SEARCH)
    write_text_atomic(saved, config.to_json())
    return False


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """A finished search: the derived net (as written to ``run_dir/arch.json``)
    and the run's summary (as written to ``run_dir/summary.json``)."""

    arch: ArchSpec
    summary: dict[str, Any]
    run_dir: Path


def run_search(
    config: SearchConfig,
    run_dir: str | Path,
    strategy_name: str = "default",
    overwrite: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    accept_table_change: bool = False,
) -> SearchResult:
    """Runs (or resumes, or reports the finished) search in run_dir; returns the
    derived ArchSpec with the run's summary. A resumed search whose latency
    table changed since it began is refused, unless ``accept_table_change``:
    then the run goes on against the new table and keeps the old one and the
    epoch of the change (``table_changes``)."""

    run_dir = Path(run_dir)
    space = load_space(config.space)
    table_path = (
        Path(config.latency_table) if config.latency_table else default_table_path(space.name)
    )
    table = LatencyTable.load(table_path)
    # Refused before anything trains; a space given as a file is named in the hint.
    source = config.space if Path(config.space).is_file() else None
    table.check_space(space, source)
    # Before the data (streamed data run TensorFlow ops to open): MultiWorkerMirroredStrategy
    # must exist before any other TensorFlow op.
    strategy = make_strategy(strategy_name)
    weight_data, arch_data = load_search_data(config, log)
    check_search_data(space, config, weight_data)  # so is data that do not fit the space
    with run_dirs.locked_run_dir(run_dir):  # one process per run directory, from here on
        if prepare_run_dir(run_dir, config, overwrite, log):
            summary = json.loads((run_dir / "summary.json").read_text())
            log(
                f"{run_dir} holds a finished search; its summary follows (use another --run_dir to search again)"
            )
            return SearchResult(
                ArchSpec.from_json((run_dir / "arch.json").read_text()), summary, run_dir
            )
        prov = table.provenance
        log(
            f"optimising the latency of {prov.get('device', 'an unnamed device')} "
            f"({prov.get('backend')}, {prov.get('threads')} thread(s), batch {prov.get('batch_size')}) "
            f"from {table_path}"
        )
        check = {"checked": False, "reason": "latency_check is false"}
        if config.latency_check:
            check = cached_json(
                run_dir / "latency_check.json",
                lambda: check_table_here(space, table, str(table_path), seed=config.seed, log=log),
            )
        write_text_atomic(run_dir / "space.json", json.dumps(space.to_config(), indent=2) + "\n")
        table_changed(run_dir, table, table_path, accept_table_change, log)
        write_text_atomic(run_dir / "latency_table.json", table.to_json())

        import keras

        if config.deterministic:
            # The same command and seed derive the same net on one machine.
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)  # the same initial weights for the same seed
        previous_policy = keras.mixed_precision.global_policy()
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            with strategy.scope():
                net = SuperNet.from_space(
                    space, arch_init_seed=config.seed, weight_sharing=config.weight_sharing
                )
            searcher = Searcher(
                config, net, table, weight_data, arch_data, run_dir, strategy, log=log
            )
            searcher.restore()
            arch, summary = searcher.run()
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        summary["latency_table"] = {
            "path": str(table_path),
            "device": prov.get("device"),
            "check": {k: v for k, v in check.items() if k != "rows"},
        }
        changes = run_dir / TABLE_CHANGES
        if changes.is_file():
            summary["latency_table"]["changes"] = json.loads(changes.read_text())
        write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return SearchResult(arch, summary, run_dir)


TABLE_CHANGES = "latency_table_changes.json"


def _table_difference(before: LatencyTable, after: LatencyTable) -> tuple[list[str], str]:
    """The entries that differ between two tables, and a line naming what changed."""
    keys = sorted(set(before.entries) | set(after.entries))
    entries = [k for k in keys if before.entries.get(k) != after.entries.get(k)]
    parts = []
    if entries:
        k = entries[0]
        old, new = before.entries.get(k), after.entries.get(k)
        show = lambda e: "absent" if e is None else f"{e.median_ms:.4f} ms"  # noqa: E731
        parts.append(f"{len(entries)} entries differ, e.g. {k}: {show(old)} -> {show(new)}")
    fields = sorted(
        f for f in set(before.provenance) | set(after.provenance)
        if f != "date" and before.provenance.get(f) != after.provenance.get(f)
    )  # fmt: skip
    for f in fields:
        parts.append(f"{f}: {before.provenance.get(f)!r} -> {after.provenance.get(f)!r}")
    if before.overhead_ms != after.overhead_ms:
        parts.append(f"overhead: {before.overhead_ms} -> {after.overhead_ms} ms")
    return entries, "; ".join(parts) or "only its date differs"


def _checkpoint_epoch(run_dir: Path) -> int:
    """Epochs finished at the run's latest checkpoint (0 without one)."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(str(run_dir / run_dirs.CHECKPOINT_DIR))
    if not path:
        return 0
    return int(tf.train.load_checkpoint(path).get_tensor(variable_key("epoch")))


def table_changed(
    run_dir: Path, table: LatencyTable, table_path: Path, accept: bool, log
) -> list[str]:
    """Before a (resumed) search writes ``run_dir/latency_table.json``, the
    record of the table its earlier epochs optimised: a table that differs
    from it is refused, naming what changed, unless ``accept``; then the old
    table is kept as ``latency_table.until_epoch<N>.json`` and the change
    appended to ``latency_table_changes.json``. Returns the changed entries."""
    saved = run_dir / "latency_table.json"
    if not saved.is_file():
        return []
    before = LatencyTable.load(saved)
    if json.loads(saved.read_text()) == json.loads(table.to_json()):
        return []
    entries, detail = _table_difference(before, table)
    if not accept:
        raise LatencyTableError(
            f"the latency table {table_path} has changed since the search in {run_dir} began "
            f"({detail}); {saved} is the table its earlier epochs optimised and is kept. To "
            f"resume as begun, put that table back (cp {saved} {table_path}); to go on against "
            "the new one, pass --accept_table_change (the change is recorded with its epoch)"
        )
    epoch = _checkpoint_epoch(run_dir)
    kept = run_dir / f"latency_table.until_epoch{epoch}.json"
    write_text_atomic(kept, saved.read_text())
    record = run_dir / TABLE_CHANGES
    changes = json.loads(record.read_text()) if record.is_file() else []
    changes.append(
        {
            "from_epoch": epoch + 1,
            "table": str(table_path),
            "previous": kept.name,
            "entries_changed": len(entries),
            "detail": detail,
        }
    )
    write_text_atomic(record, json.dumps(changes, indent=2) + "\n")
    log(f"the latency table changed ({detail}): epochs from {epoch + 1} optimise {table_path}")
    return entries


def format_summary(summary: dict[str, Any], run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    last = summary["epoch_reports"][-1] if summary.get("epoch_reports") else {}
    weight = last.get("weight_pass") or {}
    lines = [
        f"search finished: {summary['epochs']} epochs, {summary['global_steps']} steps, "
        f"{summary['wall_time_s'] / 60:.1f} min",
        f"derived: {summary['block_string']}",
        f"path: {summary['path']}",
        f"predicted latency {summary['predicted_latency_ms']:.3f} ms, params {summary['params']:,}, "
        f"multiply-adds {summary['mult_adds']:,}",
    ]
    warmup = summary.get("warmup_end")
    if warmup:
        lines.append(
            f"warm-up: {warmup['warmup_epochs']} epochs, then the architecture stage "
            f"({warmup['reason']})"
        )
    if summary.get("path_margin") is not None:
        lines.append(
            f"path probability {summary['path_probability']:.4f}, runner-up "
            f"{summary['runner_up_path']} {summary['runner_up_probability']:.4f}: margin "
            f"{summary['path_margin']:.4f} (log-odds); smallest op margin "
            f"{summary['min_op_margin']:.4f}"
        )
    for tie in summary.get("near_ties") or []:
        lines.append(f"near-tie: {tie}")
    for kept in summary.get("best") or []:
        lines.append(
            f"best {kept['rank']}: epoch {kept['epoch']}, supernet accuracy {kept['acc']:.4f}: "
            f"{kept['block_string']}"
        )
    if weight:
        lines.append(
            f"last weight pass: cross-entropy {weight.get('ce', float('nan')):.4f}, accuracy {weight.get('acc', float('nan')):.4f}"
        )
    lines += [
        f"architecture: {run_dir / 'arch.json'} (each epoch's in {run_dir / 'archs'})",
        f"checkpoints: {run_dir / 'ckpt'}; TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}",
    ]
    return "\n".join(lines)


def run_min_fraction(run_dir: str | Path, objective: dict) -> float:
    """The lower edge of the budget's band a run derives with: its objective's
    ``min_fraction``; else the one its own derivation recorded
    (``summary.json``'s ``budget``), so that a run searched under an older
    default re-derives the net it derived then; else today's default."""
    if "min_fraction" in objective:
        return float(objective["min_fraction"])
    summary = Path(run_dir) / "summary.json"
    if summary.is_file():
        recorded = (json.loads(summary.read_text()).get("budget") or {}).get("min_fraction")
        if recorded is not None:
            return float(recorded)
    return Objective.min_fraction


def derive_from_checkpoint(
    run_dir: str | Path,
    checkpoint: str | None = None,
    target_ms: float | None = None,
    paper: bool = False,
    min_fraction: float | None = None,
):
    """The ArchSpec of a run's architecture parameters at a checkpoint (default:
    the latest): the paper's derivation, or with ``target_ms`` (by default the
    run's own budget, when its objective has one, unless ``paper``) the most
    probable net whose latency on the run's table (``run_dir/latency_table.json``)
    is at most that, and at least ``min_fraction`` of it where a net is (by
    default the run's objective's ``min_fraction``; see
    ``budget.derive_within_budget``)."""
    if paper and target_ms is not None:
        raise ValueError("give target_ms or paper=True, not both")
    import tensorflow as tf

    run_dir = Path(run_dir)
    space_file = run_dir / "space.json"
    if not space_file.is_file():
        raise RunDirError(
            f"{run_dir}: no space.json; give the run directory of a search (--run_dir)"
        )
    space = SearchSpace.from_config(json.loads(space_file.read_text()), source=str(space_file))
    ckpt = run_dir / run_dirs.CHECKPOINT_DIR
    path = checkpoint or tf.train.latest_checkpoint(str(ckpt))
    if not path:
        raise RunDirError(f"{ckpt}: no checkpoint yet; let the search run at least one epoch")
    if not Path(f"{path}.index").is_file():
        found = sorted(
            (str(p.with_suffix("")) for p in ckpt.glob("ckpt-*.index")),
            key=lambda name: int(name.rsplit("-", 1)[1]),
        )
        raise RunDirError(
            f"{path}: no such checkpoint (no {Path(path).name}.index); "
            + (f"the run's checkpoints are {found}" if found else f"{ckpt} holds none")
            + ", or leave out --checkpoint for the latest"
        )

    # The Searcher's tf.train.Checkpoint holds arch={name: parameter}, global_step and epoch.
    reader = tf.train.load_checkpoint(path)
    names = variables_in(reader.get_variable_to_shape_map(), "arch")
    if not names:
        raise RunDirError(f"{path}: no architecture parameters; give a search's checkpoint")
    arrays = {name: reader.get_tensor(variable_key("arch", name)) for name in names}
    step = int(reader.get_tensor(variable_key("global_step")))
    epoch = int(reader.get_tensor(variable_key("epoch")))
    saved = run_dir / run_dirs.CONFIG_FILES[run_dirs.SEARCH]
    config = json.loads(saved.read_text()) if saved.is_file() else {}
    threshold = config.get("tie_threshold")
    options = {"tie_threshold": threshold} if threshold is not None else {}
    provenance = {"checkpoint": str(path), "epoch": epoch, "global_step": step}
    objective = config.get("objective") or {}
    if target_ms is None and not paper and objective.get("kind") == "budget":
        target_ms = objective.get("target_ms")
    if target_ms is None:
        return derive_arch(space, **arrays, name=f"step_{step}", provenance=provenance, **options)
    table_file = run_dir / "latency_table.json"
    if not table_file.is_file():
        raise RunDirError(
            f"{table_file}: missing; a derivation under a latency budget needs the table the "
            "search used (every finished search writes it)"
        )
    table = LatencyTable.load(table_file)
    if min_fraction is None:
        min_fraction = run_min_fraction(run_dir, objective)
    spec = derive_within_budget(
        space, latency_costs(space, table), **arrays, budget_ms=target_ms,
        name=f"step_{step}", provenance=provenance, min_fraction=min_fraction, **options,
    )  # fmt: skip
    return dataclasses.replace(
        spec, provenance={**spec.provenance, "predicted_latency_ms": table.predicted_ms(spec)}
    )
