"""Measuring latency on this device: table pieces and whole derived models.

Backend ``tflite`` converts each model to its own float32 .tflite with the
exporter's converter (``exporting.convert_tflite``, builtin ops: a table times
what is exported) and times ``invoke()`` with the LiteRT interpreter; backend
``tf`` times a ``tf.function`` with a fixed input signature. Both warm up, then
time each run.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from densenas_tf.exporting import export as exporting
from densenas_tf.latency.table import (
    BACKENDS,
    LatencyEntry,
    LatencyKey,
    LatencyTable,
    LatencyTableError,
    new_provenance,
    space_keys,
)
from densenas_tf.nn import op_layers
from densenas_tf.nn.models import build_model
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.baselines import mobilenet_v2_fashion
from densenas_tf.space.spaces import SearchSpace


def build_piece_model(key: LatencyKey, batch_size: int = 1) -> keras.Model:
    """A model of one table piece, built from the same registry as derived models."""
    inputs = keras.Input(shape=key.in_shape, batch_size=batch_size)
    if key.kind == "op":
        layers = op_layers.make_op_layers(
            key.op, key.in_shape[2], key.out_channels, key.stride, "op"
        )
        outputs = op_layers.apply_op_layers(layers, inputs)
    elif key.kind == "stem":
        stem = key.stem
        conv = op_layers.make_conv_bn_act_layers(stem.conv_width, 3, stem.stride, "stem")
        op = op_layers.make_op_layers(stem.op, stem.conv_width, stem.width, 1, "stem_op")
        outputs = op_layers.apply_op_layers(op, op_layers.apply_conv_bn_act(conv, inputs))
    elif key.kind == "final_conv":
        conv = op_layers.make_conv_bn_act_layers(key.out_channels, 1, 1, "final")
        outputs = op_layers.apply_conv_bn_act(conv, inputs)
    elif key.kind == "classifier":
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        outputs = keras.layers.Dense(key.out_channels)(pooled)
    else:
        raise ValueError(f"unknown latency key kind {key.kind!r}")
    return keras.Model(inputs, outputs)


def overhead_model(batch_size: int = 1) -> keras.Model:
    """The smallest model (one ReLU6 on one value): its latency is the invocation cost."""
    inputs = keras.Input(shape=(1, 1, 1), batch_size=batch_size)
    return keras.Model(inputs, keras.layers.Activation("relu6")(inputs))


def _stats(times_s: list[float]) -> LatencyEntry:
    ms = np.asarray(times_s) * 1e3
    return LatencyEntry(
        median_ms=float(np.median(ms)),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        count=len(ms),
    )


def timed_runs(run: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls of run, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _time(run: Callable[[], object], warmup: int, runs: int) -> LatencyEntry:
    return _stats(timed_runs(run, warmup, runs))


def time_tflite(content: bytes, threads: int, warmup: int, runs: int) -> LatencyEntry:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        data = np.random.default_rng(0).uniform(size=detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], data)
    return _time(interpreter.invoke, warmup, runs)


def time_tf(model: keras.Model, warmup: int, runs: int) -> LatencyEntry:
    shape = tuple(model.inputs[0].shape)
    function = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)]
    )
    data = tf.random.stateless_uniform(shape, seed=[0, 0])
    return _time(lambda: function(data).numpy(), warmup, runs)


QUANTIZATIONS = ("none", "int8")
CALIBRATION_SAMPLES = 16


def tflite_content(model: keras.Model, quantization: str = "none", image_input: bool = False):
    """The model as the table times it: float32 TFLite (``none``), or int8 as
    the exporter quantizes a net (``int8``: int8 weights and activations, int8
    out; uint8 in where the input is the image, int8 for a piece inside a
    net). Latency does not depend on the quantization scales, so the
    calibration set is drawn here: pixel values for an image input, unit
    normal features otherwise (seeded)."""
    if quantization == "none":
        return exporting.convert_tflite(model, "none")
    if quantization != "int8":
        raise LatencyTableError(
            f"unknown quantization {quantization!r}; tables are measured as {QUANTIZATIONS}"
        )
    shape = (CALIBRATION_SAMPLES, *model.input_shape[1:])
    rng = np.random.default_rng(0)
    if image_input:
        samples = rng.uniform(0, 255, shape).astype(np.float32)
    else:
        samples = rng.standard_normal(shape).astype(np.float32)
    return exporting.convert_tflite(
        model, "int8", samples, int8_input="uint8" if image_input else "int8"
    )


def measure(
    model: keras.Model,
    backend: str,
    threads: int,
    warmup: int,
    runs: int,
    quantization: str = "none",
    image_input: bool = False,
) -> LatencyEntry:
    if backend == "tflite":
        content = tflite_content(model, quantization, image_input)
        return time_tflite(content, threads, warmup, runs)
    if quantization != "none":
        raise LatencyTableError(f"backend {backend!r} measures float32 only, not {quantization}")
    if backend == "tf":
        return time_tf(model, warmup, runs)
    raise LatencyTableError(f"unknown backend {backend!r}; backends are {BACKENDS}")


def fixed_batch_model(spec: ArchSpec, batch_size: int = 1) -> keras.Model:
    """The net of an ArchSpec with its batch size fixed, as it is timed and deployed."""
    model = build_model(spec)
    inputs = keras.Input(shape=spec.input_shape, batch_size=batch_size)
    return keras.Model(inputs, model(inputs))


def measure_arch(
    spec: ArchSpec,
    backend: str,
    threads: int,
    batch_size: int = 1,
    warmup: int = 20,
    runs: int = 100,
    quantization: str = "none",
) -> LatencyEntry:
    """Measured latency of the derived net built from an ArchSpec."""
    fixed = fixed_batch_model(spec, batch_size)
    return measure(fixed, backend, threads, warmup, runs, quantization, image_input=True)


def arch_timer(
    spec: ArchSpec,
    backend: str,
    threads: int,
    batch_size: int = 1,
    warmup: int = 20,
    quantization: str = "none",
) -> Callable[[int], float]:
    """A function timing the net of an ArchSpec here: runs -> median ms. The
    net is built (and converted) once, so that rounds of timing can interleave
    several nets."""
    fixed = fixed_batch_model(spec, batch_size)
    if backend == "tflite":
        content = tflite_content(fixed, quantization, image_input=True)
        return lambda runs: time_tflite(content, threads, warmup, runs).median_ms
    if quantization != "none":
        raise LatencyTableError(f"backend {backend!r} measures float32 only, not {quantization}")
    if backend == "tf":
        return lambda runs: time_tf(fixed, warmup, runs).median_ms
    raise LatencyTableError(f"unknown backend {backend!r}; backends are {BACKENDS}")


def mobilenet_v2_budget(
    width: float = 0.75,
    runs: int = 200,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """A latency budget taken from a hand-made net: the measured latency of
    MobileNetV2 at ``width`` (``space.baselines``) as float TFLite, 1 thread,
    batch 1, on this machine (``target_ms``, with its ``source`` and ``arch``)."""
    spec = mobilenet_v2_fashion(width)
    log(f"measuring {spec.name} as float TFLite (1 thread, batch 1) for the latency budget")
    entry = measure_arch(spec, "tflite", threads=1, warmup=20, runs=runs)
    return {
        "target_ms": entry.median_ms,
        "source": f"{spec.name} measured here, float TFLite 1 thread (median of {runs})",
        "arch": spec.to_block_string(),
    }


def pin_threads(threads: int) -> None:
    """Pins TensorFlow's thread pools (call before TensorFlow runs anything)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised: keep what is set
        pass


def device_description() -> str:
    cpu = platform.processor() or platform.machine()
    model_name = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return f"{model_name or cpu} ({os.cpu_count()} logical CPUs, {platform.system()})"


def vector_isa() -> str:
    """This CPU's widest vector instructions ("AVX-512 (VNNI, bf16)", "AVX2", ...).
    CPUs of one model name differ here, and with them the relative latency
    of ops (int8 above all), so tables record it beside the device."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if "avx512f" in flags:
        extras = [
            name
            for flag, name in (("avx512_vnni", "VNNI"), ("avx512_bf16", "bf16"))
            if flag in flags
        ]
        return "AVX-512" + (f" ({', '.join(extras)})" if extras else "")
    if "avx2" in flags:
        return "AVX2"
    return "no AVX2" if flags else "unknown"


def versions() -> dict[str, str]:
    try:
        litert = version("ai-edge-litert")
    except Exception:  # not installed
        litert = "absent"
    return {"tensorflow_version": tf.__version__, "litert_version": litert}


def build_table(
    space: SearchSpace,
    out: str | os.PathLike,
    backend: str = "tflite",
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 20,
    runs: int = 100,
    save_every: int = 10,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    quantization: str = "none",
) -> tuple[LatencyTable, int]:
    """Measures every entry the space needs that ``out`` lacks; returns (table, newly measured).

    An existing file is resumed when it was built with the same backend,
    threads, batch size and space; otherwise it is refused. The file is
    rewritten atomically every ``save_every`` entries and at the end.
    """
    if backend not in BACKENDS:
        raise LatencyTableError(f"unknown backend {backend!r}; backends are {BACKENDS}")
    out = Path(out)
    if quantization not in QUANTIZATIONS:
        raise LatencyTableError(
            f"unknown quantization {quantization!r}; tables are measured as {QUANTIZATIONS}"
        )
    settings = {
        "backend": backend,
        "threads": threads,
        "batch_size": batch_size,
        "quantization": quantization,
    }
    if out.is_file():
        table = LatencyTable.load(out)
        prov = {"quantization": "none", **table.provenance}
        clashes = {k: (prov.get(k), v) for k, v in settings.items() if prov.get(k) != v}
        if prov.get("space_fingerprint") != space.fingerprint():
            clashes["space"] = (prov.get("space"), space.name)
        if clashes:
            detail = ", ".join(f"{k}: file has {a!r}, asked {b!r}" for k, (a, b) in clashes.items())
            raise LatencyTableError(
                f"{out} was measured with other settings ({detail}); choose another --out"
            )
        # A table is one device's: entries timed here must not join another's.
        here = {"device": device_description(), **versions()}
        if "vector_isa" in prov:  # tables begun before it was recorded lack it
            here["vector_isa"] = vector_isa()
        other = {k: (prov.get(k), v) for k, v in here.items() if prov.get(k) != v}
        if other:
            detail = ", ".join(
                f"{k}: the file's is {a!r}, here {b!r}" for k, (a, b) in other.items()
            )
            raise LatencyTableError(
                f"{out} was begun on another device or runtime ({detail}); a table holds one "
                "device's timings, so it is not completed here. Choose another --out to measure "
                "this machine, or finish it where it was begun"
            )
    else:
        table = LatencyTable(
            new_provenance(space, backend, threads, batch_size, device_description(), versions())
        )
        table.provenance["quantization"] = quantization
        table.provenance["vector_isa"] = vector_isa()
        table.overhead_ms = measure(
            overhead_model(batch_size), backend, threads, warmup, runs * 5, quantization
        ).median_ms
        table.save(out)
    keys = space_keys(space).all_keys()
    todo = [k for k in keys if k not in table.entries]
    log(
        f"{len(keys)} entries needed, {len(keys) - len(todo)} already in {out}, {len(todo)} to measure"
    )
    start = time.time()
    for i, name in enumerate(todo, start=1):
        model = build_piece_model(keys[name], batch_size)
        image = keys[name].kind == "stem"  # the stem takes the image (uint8 when int8)
        table.entries[name] = measure(model, backend, threads, warmup, runs, quantization, image)
        keras.backend.clear_session()
        elapsed = time.time() - start
        eta = elapsed / i * (len(todo) - i)
        log(f"[{i}/{len(todo)}] {name}: {table.entries[name].median_ms:.4f} ms (eta {eta:.0f} s)")
        if i % save_every == 0:
            table.save(out)
    table.save(out)
    return table, len(todo)
