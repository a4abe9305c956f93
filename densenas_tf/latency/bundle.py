"""Latency tables of another device: a bundle of pieces out, timings back in.

``write_bundle(space, out_dir)`` writes every piece a space's table needs (and
the one-op model that times an invocation's fixed cost) as its own ``.tflite``
file, converted as ``tools/build_lut.py`` converts them, and a few random whole
nets of the space (with which the import checks the table on the device), with:

- ``manifest.json``: each piece's table key, file, input shape and dtype; the
  space's fingerprint and config, the threads, batch size and quantization,
  and the bundle's fingerprint (a hash of all of that and of every file);
- ``measure.py``: a script that needs only Python, NumPy and ``ai-edge-litert``
  (see ``bundle_runner``) and writes ``results.json``;
- ``android.sh``: ``adb push`` and TensorFlow Lite's ``benchmark_model``
  command lines, whose output (its "Inference timings in us" lines) the
  import reads as well.

``import_results(bundle_dir, results_file, device)`` reads either kind of
results back into a :class:`LatencyTable` that the search, the additivity
report and ``describe`` use like any other. It refuses, one line each, results
of another bundle, missing pieces (named), non-positive, NaN or non-numeric
figures and units it does not know. With the whole nets timed too, the
table's provenance gets ``device_check``: its predictions of those nets
against their timings on the device (MAPE, Spearman, each net).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import write_bytes_atomic, write_text_atomic
from densenas_tf.latency.measure import (
    build_piece_model,
    fixed_batch_model,
    overhead_model,
    tflite_content,
)
from densenas_tf.latency.report import mape_percent, random_arch, spearman
from densenas_tf.latency.table import LatencyEntry, LatencyTable, new_provenance, space_keys
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace

FORMAT = 1
OVERHEAD_KEY = "overhead"  # the one-op model: an invocation's fixed cost
NET_PREFIX = "net:"  # whole nets, timed to check the table on the device
RUNNER = Path(__file__).with_name("bundle_runner.py")
DEVICE_DIR = "/data/local/tmp/densenas_bundle"  # where android.sh pushes the bundle
UNITS_TO_MS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}


class BundleError(DenseNASError, ValueError):
    """A bundle or a results file that cannot be used; the message says why."""


def _piece_file(index: int) -> str:
    return f"pieces/{index:04d}.tflite"


def write_bundle(
    space: SearchSpace,
    out_dir: str | Path,
    threads: int = 1,
    batch_size: int = 1,
    nets: int = 5,
    seed: int = 0,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    quantization: str = "none",
) -> dict[str, Any]:
    """Writes the bundle of ``space`` in ``out_dir`` and returns its manifest:
    every piece, and ``nets`` random whole nets of the space (the additivity
    report's draw, ``seed``) with which the import checks the table on the
    device. Pieces already written (by an earlier, stopped run) are kept."""
    import keras

    out = Path(out_dir)
    manifest_file = out / "manifest.json"
    if manifest_file.is_file():
        old = json.loads(manifest_file.read_text())
        if old.get("space_fingerprint") != space.fingerprint() or (
            old.get("threads"),
            old.get("batch_size"),
            old.get("nets"),
            old.get("nets_seed"),
            old.get("quantization"),
        ) != (threads, batch_size, nets, seed, quantization):
            raise BundleError(
                f"{out} holds a bundle of other settings (space {old.get('space')!r}, "
                f"{old.get('threads')} thread(s), batch {old.get('batch_size')}, "
                f"{old.get('nets')} whole nets of seed {old.get('nets_seed')}, quantization "
                f"{old.get('quantization')!r}); "
                "choose another --bundle directory"
            )
    keys = space_keys(space).all_keys()
    models = {OVERHEAD_KEY: lambda: overhead_model(batch_size)}
    for name, key in keys.items():
        models[name] = lambda key=key: build_piece_model(key, batch_size)
    rng = np.random.default_rng(seed)
    archs = {}
    for i in range(nets):
        spec = random_arch(space, rng, f"random_{i}")
        archs[NET_PREFIX + spec.name] = spec
        models[NET_PREFIX + spec.name] = lambda spec=spec: fixed_batch_model(spec, batch_size)
    pieces = []
    for index, (name, make) in enumerate(models.items()):
        path = out / _piece_file(index)
        image = name in archs or (name in keys and keys[name].kind == "stem")
        if not path.is_file():
            write_bytes_atomic(path, tflite_content(make(), quantization, image))
            keras.backend.clear_session()
            log(f"[{index + 1}/{len(models)}] {name}")
        if name == OVERHEAD_KEY:
            shape = [batch_size, 1, 1, 1]
        elif name in archs:
            shape = [batch_size, *archs[name].input_shape]
        else:
            shape = [batch_size, *keys[name].in_shape]
        piece = {
            "key": name,
            "file": _piece_file(index),
            "input_shape": shape,
            "input_dtype": "float32" if quantization == "none" else ("uint8" if image else "int8"),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        if name in archs:
            piece["arch"] = archs[name].to_dict()
        pieces.append(piece)
    manifest = {
        "format": FORMAT,
        "space": space.name,
        "space_fingerprint": space.fingerprint(),
        "space_config": space.to_config(),
        "backend": "tflite",
        "threads": threads,
        "batch_size": batch_size,
        "quantization": quantization,
        "nets": nets,
        "nets_seed": seed,
        "pieces": pieces,
    }
    manifest["fingerprint"] = _fingerprint(manifest)
    write_text_atomic(out / "measure.py", RUNNER.read_text())
    write_text_atomic(out / "android.sh", android_script(manifest))
    write_text_atomic(manifest_file, json.dumps(manifest, indent=2) + "\n")
    log(f"wrote a bundle of {len(pieces)} pieces in {out} (fingerprint {manifest['fingerprint']})")
    return manifest


def _fingerprint(manifest: dict[str, Any]) -> str:
    fields = {k: v for k, v in manifest.items() if k not in ("fingerprint", "space_config")}
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def android_script(manifest: dict[str, Any]) -> str:
    """adb push, then benchmark_model on every piece, its output kept in one log."""
    threads = manifest["threads"]
    lines = [
        "#!/bin/sh",
        "# Times every piece of this bundle on an Android device with TensorFlow Lite's",
        "# benchmark_model (build it, or take the prebuilt binary for your ABI, and push it to",
        f"# {DEVICE_DIR}/benchmark_model first). Run from the bundle directory:",
        "#   sh android.sh > benchmark_model.log",
        "# then: densenas-import-lut --bundle=. --results=benchmark_model.log --device=...",
        "set -e",
        f"adb shell mkdir -p {DEVICE_DIR}/pieces",
        f"adb push pieces/. {DEVICE_DIR}/pieces/",
    ]
    for piece in manifest["pieces"]:
        graph = shlex.quote(f"{DEVICE_DIR}/{piece['file']}")
        lines.append(
            f"adb shell {DEVICE_DIR}/benchmark_model --graph={graph} --num_threads={threads} "
            "--use_xnnpack=true --warmup_runs=20 --num_runs=100"
        )
    return "\n".join(lines) + "\n"


# ----- results back ------------------------------------------------------------------------
_GRAPH = re.compile(r"Graph: \[([^\]]+)\]")
_TIMINGS = re.compile(r"Inference timings in (\S+?):(.*)")
_FIELD = re.compile(r"([A-Za-z ()]+?):\s*([^,]+)")
_COUNT = re.compile(r"count=(\d+).*?\bavg=([^\s]+).*?\bstd=([^\s]+)")


def parse_benchmark_model(text: str, source: str = "benchmark_model output") -> dict[str, Any]:
    """Timings per graph file from ``benchmark_model``'s output: each run's
    "Graph: [...]" line, its "Inference timings in <unit>: ..., Inference
    (avg): X" line and the last "count=... avg=... std=..." line before it.
    Returns {file name: {"median", "mean", "std", "count", "unit"}}; the mean
    stands for the median, which the tool does not print."""
    found: dict[str, Any] = {}
    graph, count = None, None
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _GRAPH.search(line):
            graph, count = m.group(1), None
        elif m := _COUNT.search(line):
            count = m.groups()
        elif m := _TIMINGS.search(line):
            if graph is None:
                raise BundleError(
                    f"{source}, line {number}: inference timings before any 'Graph: [...]' line"
                )
            fields = {k.strip(): v.strip() for k, v in _FIELD.findall(m.group(2))}
            if "Inference (avg)" not in fields:
                raise BundleError(f"{source}, line {number}: no 'Inference (avg)' in {line!r}")
            entry = {"mean": fields["Inference (avg)"], "unit": m.group(1)}
            entry["median"] = entry["mean"]
            entry["std"], entry["count"] = (count[2], count[0]) if count else ("0", "1")
            found[Path(graph).name] = entry
            graph = None
    if not found:
        raise BundleError(
            f"{source}: no 'Inference timings in us: ... Inference (avg): ...' line; is it "
            "benchmark_model's output?"
        )
    return found


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise BundleError(f"{what} is {value!r}, not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BundleError(f"{what} is {value!r}, not a number") from None
    if math.isnan(number):
        raise BundleError(f"{what} is NaN")
    return number


def _scale(unit: Any, source: str) -> float:
    if unit not in UNITS_TO_MS:
        raise BundleError(
            f"{source}: unit {unit!r} is not one this import knows ({', '.join(UNITS_TO_MS)})"
        )
    return UNITS_TO_MS[unit]


def import_results(bundle_dir: str | Path, results_file: str | Path, device: str) -> LatencyTable:
    """The latency table of the device that timed the bundle."""
    bundle_dir, results_file = Path(bundle_dir), Path(results_file)
    manifest_file = bundle_dir / "manifest.json"
    if not manifest_file.is_file():
        raise BundleError(f"{bundle_dir}: no manifest.json; is it a bundle of tools/build_lut.py?")
    manifest = json.loads(manifest_file.read_text())
    if not device.strip():
        raise BundleError("--device is empty: name the device the bundle was timed on")
    text = results_file.read_text()
    by_key: dict[str, dict[str, Any]]
    try:
        results = json.loads(text)
    except ValueError:
        results = None
    if isinstance(results, dict):
        found = results.get("bundle_fingerprint")
        if found != manifest["fingerprint"]:
            raise BundleError(
                f"{results_file} was timed from another bundle (fingerprint {found!r}; "
                f"{bundle_dir} is {manifest['fingerprint']!r}): time this bundle's pieces"
            )
        scale = _scale(results.get("unit"), str(results_file))
        by_key = {k: v for k, v in results.get("results", {}).items()}
        runtime = str(results.get("runtime", "unknown"))
        threads = results.get("threads", manifest["threads"])
    else:
        by_file = parse_benchmark_model(text, str(results_file))
        files = {Path(p["file"]).name: p["key"] for p in manifest["pieces"]}
        strangers = sorted(set(by_file) - set(files))
        if strangers:
            raise BundleError(
                f"{results_file} times graphs that are not in {bundle_dir} ({strangers[:3]}): it "
                "comes from another bundle"
            )
        units = {v["unit"] for v in by_file.values()}
        scale = _scale(units.pop() if len(units) == 1 else sorted(units), str(results_file))
        by_key = {files[name]: v for name, v in by_file.items()}
        runtime, threads = "benchmark_model", manifest["threads"]
    missing = [p["key"] for p in manifest["pieces"] if p["key"] not in by_key]
    if missing:
        raise BundleError(
            f"{results_file} lacks {len(missing)} of the bundle's {len(manifest['pieces'])} "
            f"pieces: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; time them "
            "(measure.py resumes where it stopped) and import again"
        )
    entries = {}
    for key in (p["key"] for p in manifest["pieces"]):
        raw = by_key[key]
        if not isinstance(raw, dict):
            raise BundleError(f"{results_file}: piece {key} holds {raw!r}, not its timings")
        values = {}
        for field in ("median", "mean", "std"):
            value = _number(raw.get(field), f"{results_file}: {field} of {key}") * scale
            if value < 0 or (value == 0 and field != "std"):
                raise BundleError(f"{results_file}: {field} of {key} is {value:g} ms, not positive")
            values[field] = value
        count = int(_number(raw.get("count", 1), f"{results_file}: count of {key}"))
        entries[key] = LatencyEntry(values["median"], values["mean"], values["std"], count)
    space = SearchSpace.from_config(manifest["space_config"], source=str(manifest_file))
    if space.fingerprint() != manifest["space_fingerprint"]:
        raise BundleError(f"{manifest_file}: its space config does not match its fingerprint")
    provenance = new_provenance(
        space,
        manifest["backend"],
        int(threads),
        manifest["batch_size"],
        device.strip(),
        {"runtime": runtime},
    )
    provenance["bundle_fingerprint"] = manifest["fingerprint"]
    provenance["quantization"] = manifest["quantization"]
    table = LatencyTable(provenance, overhead_ms=entries.pop(OVERHEAD_KEY).median_ms)
    nets = {k: entries.pop(k) for k in list(entries) if k.startswith(NET_PREFIX)}
    table.entries.update(entries)
    table.check_space(space)
    if nets:
        table.provenance["device_check"] = _device_check(manifest, table, nets)
    return table


def _device_check(manifest, table: LatencyTable, nets: dict[str, LatencyEntry]) -> dict[str, Any]:
    """The table's additivity on the device: its predictions of the bundle's
    whole nets against their timings there."""
    specs = {p["key"]: ArchSpec.from_dict(p["arch"]) for p in manifest["pieces"] if "arch" in p}
    rows = [
        {
            "name": specs[k].name,
            "arch": specs[k].to_block_string(),
            "predicted_ms": table.predicted_ms(specs[k]),
            "measured_ms": entry.median_ms,
        }
        for k, entry in nets.items()
    ]
    predicted = [r["predicted_ms"] for r in rows]
    measured = [r["measured_ms"] for r in rows]
    return {
        "nets": len(rows),
        "mape_percent": mape_percent(predicted, measured),
        "spearman": spearman(predicted, measured) if len(rows) > 1 else None,
        "rows": rows,
    }
