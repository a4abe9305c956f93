"""Input throughput: can the streamed pipeline feed the search step? (tools/bench_input.py)

Times the training pipeline (read, decode, random-resized-crop, flip, batch) of
``data.sources`` streams on an image folder of JPEGs and on the same images as TFRecord
shards, in images per second, and sets it beside the search's weight and
architecture steps (``bench.bench_space``) in images per second: a pipeline
slower than the step starves it.

The JPEGs are real Fashion-MNIST test images upscaled (bilinear) to the
requested size and stored as RGB: pictures, not noise, at ImageNet's size.
Being smooth, they compress better than photographs (about 5 KB each at
224x224), so the rates measured on them are upper bounds for real photos.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist
from densenas_tf.data.sources import open_image_folder, open_tfrecords
from densenas_tf.data.tfrecords import write_tfrecords
from densenas_tf.experiments.bench import bench_space


def write_jpeg_folder(
    root: str | Path,
    count: int,
    image_size: int = 224,
    classes: int = 10,
    log: Callable[[str], None] = lambda line: None,
) -> Path:
    """``count`` Fashion-MNIST test images upscaled to image_size, as RGB JPEGs (quality
    90) in root/<class>/<n>.jpg, ``classes`` classes taken in turn; returns root."""
    import tensorflow as tf

    images, labels = load_fashion_mnist("test")
    root = Path(root)
    names = [c.replace("/", "_").replace(" ", "_").lower() for c in FASHION_MNIST_CLASSES]
    per_class = [np.flatnonzero(labels == c) for c in range(classes)]
    log(f"writing {count} {image_size}x{image_size} JPEGs to {root}")
    for n in range(count):
        label = n % classes
        image = images[per_class[label][(n // classes) % len(per_class[label])]]
        big = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), "bilinear")
        rgb = tf.image.grayscale_to_rgb(tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8))
        path = root / names[label] / f"{n:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_jpeg(rgb, quality=90).numpy())
    return root


def time_pipeline(
    make_epoch: Callable[[int], Any],
    batch_size: int,
    epochs: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Images per second of ``make_epoch(epoch)`` datasets: one untimed epoch (the
    pipeline's start-up and autotuning), then ``epochs`` timed ones."""
    for _ in make_epoch(0):
        pass
    batches = 0
    start = clock()
    for epoch in range(1, epochs + 1):
        for _ in make_epoch(epoch):
            batches += 1
    seconds = clock() - start
    return {
        "batches": batches,
        "seconds": seconds,
        "images_per_s": batches * batch_size / max(seconds, 1e-9),
    }


def bench_input(
    work_dir: str | Path,
    images: int = 512,
    image_size: int = 224,
    batch_size: int = 64,
    epochs: int = 2,
    step_space: str | None = "imagenet_mbv2",
    step_batch: int = 8,
    step_runs: int = 5,
    clock: Callable[[], float] = time.perf_counter,
    log: Callable[[str], None] = lambda line: None,
    step_figures: dict[str, Any] | None = None,
    step_source: str = "",
) -> list[dict[str, Any]]:
    """The rows of the table (see module doc); ``step_space`` None skips the step.

    ``step_figures``: figures ``bench.bench_space`` returned earlier (e.g. a
    preset of tools/bench_step.py's JSON, named by ``step_source``), used
    instead of timing the step again (the ImageNet space traces for minutes).
    """

    work_dir = Path(work_dir)
    folder = work_dir / "jpeg"
    if not folder.is_dir():
        write_jpeg_folder(folder, images, image_size, log=log)
    records = work_dir / "tfrecords"
    if not records.is_dir():
        write_tfrecords(records, "train", image_folder=folder, records_per_shard=128, log=log)
    cache = work_dir / "cache"
    rows = []
    sources = (
        (
            "image folder (JPEG)",
            open_image_folder(folder, image_size, cache_dir=cache, test_fraction=0),
        ),
        ("TFRecords (JPEG)", open_tfrecords(records, image_size, cache_dir=cache, test_fraction=0)),
    )
    for name, data in sources:
        log(f"timing the training pipeline of the {name}")
        result = time_pipeline(
            lambda epoch, data=data: data.train_dataset(batch_size, seed=0, epoch=epoch),
            batch_size,
            epochs,
            clock,
        )
        rows.append(
            {
                "input": f"{name}, {image_size}x{image_size}, decode+crop+flip+batch {batch_size}",
                **result,
            }
        )
    if step_figures is not None:
        steps, runs = step_figures, 1
        step_space, step_batch = steps["space"], steps["batch_size"]
        note = f", from {step_source}" if step_source else ""
    elif step_space:
        log(f"timing the search steps of {step_space} at batch {step_batch}")
        steps = bench_space(step_space, step_batch, warmup=1, runs=step_runs, log=log)
        runs, note = step_runs, ""
    else:
        return rows
    for step in ("weight_step", "arch_step"):
        rows.append(
            {
                "input": f"search {step.replace('_', ' ')} ({step_space}, batch {step_batch}{note})",
                "batches": runs,
                "seconds": steps[f"{step}_s"] * runs,
                "images_per_s": steps[f"{step}_images_per_s"],
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width table."""
    width = max(len(r["input"]) for r in rows)
    lines = [f"{'input':<{width}}  {'images/s':>10}  {'batches':>7}  {'seconds':>8}"]
    for r in rows:
        lines.append(
            f"{r['input']:<{width}}  {r['images_per_s']:>10.1f}  {r['batches']:>7d}  "
            f"{r['seconds']:>8.2f}"
        )
    return "\n".join(lines)
