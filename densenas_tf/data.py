"""Data, offline: Fashion-MNIST from its IDX files, deterministic splits, tf.data.

Fashion-MNIST is read from the four IDX files that Debian's
``dataset-fashion-mnist`` installs in /usr/share/datasets/fashion-mnist (or
any directory holding the same files, gzipped or not). Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
# Mean and standard deviation of the Fashion-MNIST training pixels (scaled to [0, 1]).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


class DataError(ValueError):
    """Data that is missing or malformed; the message says what and how to fix it."""


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _find(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{data_dir}: missing {stem}(.gz). Install Debian's package with "
        "'apt-get install dataset-fashion-mnist', or pass --data_dir pointing to a directory "
        "holding the four Fashion-MNIST IDX files"
    )


def _read_idx(
    path: Path, magic: int, what: str, dims: int, expected_count: int | None
) -> np.ndarray:
    """An IDX file with ``dims`` dimensions, its header checked, as uint8."""
    header_size = 4 * (1 + dims)
    with _open(path) as f:
        header = f.read(header_size)
        if len(header) < header_size:
            raise DataError(f"{path}: truncated IDX header ({len(header)} bytes)")
        found, *shape = struct.unpack(f">{1 + dims}I", header)
        if found != magic:
            raise DataError(f"{path}: magic number {found}, expected {magic} for IDX {what}")
        if expected_count is not None and shape[0] != expected_count:
            raise DataError(f"{path}: header says {shape[0]} {what}, expected {expected_count}")
        data = f.read()
    if len(data) != int(np.prod(shape)):
        raise DataError(f"{path}: {len(data)} data bytes for {'x'.join(map(str, shape))} {what}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def read_idx_images(path: str | os.PathLike, expected_count: int | None = None) -> np.ndarray:
    """Reads an IDX3 image file into a uint8 array (count, rows, cols), checking the header."""
    return _read_idx(Path(path), IMAGES_MAGIC, "images", 3, expected_count)


def read_idx_labels(path: str | os.PathLike, expected_count: int | None = None) -> np.ndarray:
    """Reads an IDX1 label file into a uint8 array (count,), checking the header."""
    return _read_idx(Path(path), LABELS_MAGIC, "labels", 1, expected_count)


def load_fashion_mnist(
    split: str = "train", data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28, 1], labels int32 [N]) of the train or test split."""
    if split not in FASHION_MNIST_FILES:
        raise DataError(f"unknown split {split!r}; splits are {list(FASHION_MNIST_FILES)}")
    data_dir = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    if not data_dir.is_dir():
        raise DataError(
            f"{data_dir}: no such data directory. Install Debian's package with "
            "'apt-get install dataset-fashion-mnist', or pass --data_dir"
        )
    images_stem, labels_stem, count = FASHION_MNIST_FILES[split]
    images = read_idx_images(_find(data_dir, images_stem), count)
    labels = read_idx_labels(_find(data_dir, labels_stem), count)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{data_dir}: images are {images.shape[1:]}, expected 28x28")
    return images[..., None], labels.astype(np.int32)


def split_indices(count: int, second_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic random split of range(count): (first part, second part)."""
    if not 0.0 < second_fraction < 1.0:
        raise DataError(f"split fraction must be in (0, 1), got {second_fraction}")
    order = np.random.default_rng(seed).permutation(count)
    cut = count - round(count * second_fraction)
    return np.sort(order[:cut]), np.sort(order[cut:])


def normalize(images_uint8):
    """uint8 pixels to standardised float32 (Fashion-MNIST statistics)."""
    import tensorflow as tf

    x = tf.cast(images_uint8, tf.float32) / 255.0
    return (x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None = None,
    drop_remainder: bool = True,
):
    """A batched, normalised tf.data pipeline (shuffled by seed when given), prefetched."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=False)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(lambda x, y: (normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
