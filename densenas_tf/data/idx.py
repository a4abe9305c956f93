"""Fashion-MNIST from its IDX files, offline.

The four IDX files are those Debian's ``dataset-fashion-mnist`` installs in
/usr/share/datasets/fashion-mnist (or any directory holding the same files,
gzipped or not). Nothing is downloaded. ``load_fashion_mnist`` reads one split
into arrays (the search reads its training images so); ``open_idx`` opens
both splits as a ``stream.Source`` whose reader serves the arrays, so that
Fashion-MNIST splits, streams and is held in memory like every other source.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.data.pipelines import listed_share
from densenas_tf.data.stream import DEFAULT_CACHE_DIR, DataError, Source, Split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


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


# How to replace a damaged IDX file.
_IDX_FIX = (
    "reinstall Debian's package with 'apt-get install --reinstall dataset-fashion-mnist', "
    "or replace the file with an intact copy"
)


def _read_idx(
    path: Path, magic: int, what: str, dims: int, expected_count: int | None
) -> np.ndarray:
    """An IDX file with ``dims`` dimensions, its header checked, as uint8."""
    header_size = 4 * (1 + dims)
    try:
        with _open(path) as f:
            header = f.read(header_size)
            if len(header) < header_size:
                raise DataError(
                    f"{path}: truncated IDX header ({len(header)} of {header_size} bytes); "
                    f"the file is damaged: {_IDX_FIX}"
                )
            found, *shape = struct.unpack(f">{1 + dims}I", header)
            if found != magic:
                raise DataError(f"{path}: magic number {found}, expected {magic} for IDX {what}")
            if expected_count is not None and shape[0] != expected_count:
                raise DataError(f"{path}: header says {shape[0]} {what}, expected {expected_count}")
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        # A truncated gzip stream ends early (EOFError); a damaged one fails to inflate.
        raise DataError(f"{path}: truncated or damaged gzip file ({err}); {_IDX_FIX}") from err
    expected_bytes = int(np.prod(shape))
    if len(data) != expected_bytes:
        problem = "truncated" if len(data) < expected_bytes else "damaged (too long)"
        raise DataError(
            f"{path}: {len(data)} data bytes for {'x'.join(map(str, shape))} {what}, which "
            f"need {expected_bytes}; the file is {problem}: {_IDX_FIX}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def read_idx_images(path: str | os.PathLike, expected_count: int | None = None) -> np.ndarray:
    """Reads an IDX3 image file into a uint8 array (count, rows, cols), checking the header."""
    return _read_idx(Path(path), IMAGES_MAGIC, "images", 3, expected_count)


def read_idx_labels(path: str | os.PathLike, expected_count: int | None = None) -> np.ndarray:
    """Reads an IDX1 label file into a uint8 array (count,), checking the header."""
    return _read_idx(Path(path), LABELS_MAGIC, "labels", 1, expected_count)


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    data_dir = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    if not data_dir.is_dir():
        raise DataError(
            f"{data_dir}: no such data directory. Install Debian's package with "
            "'apt-get install dataset-fashion-mnist', or pass --data_dir"
        )
    return data_dir


def load_fashion_mnist(
    split: str = "train", data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28, 1], labels int32 [N]) of the train or test split."""
    if split not in FASHION_MNIST_FILES:
        raise DataError(f"unknown split {split!r}; splits are {list(FASHION_MNIST_FILES)}")
    data_dir = _data_dir(data_dir)
    images_stem, labels_stem, count = FASHION_MNIST_FILES[split]
    images = read_idx_images(_find(data_dir, images_stem), count)
    labels = read_idx_labels(_find(data_dir, labels_stem), count)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{data_dir}: images are {images.shape[1:]}, expected 28x28")
    return images[..., None], labels.astype(np.int32)


class ArrayReader:
    """Images held in arrays (uint8 [N, H, W, C], int32 labels [N]): read by row,
    shuffled exactly by permutation, like an image folder's files."""

    indexed = True

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self._tensors = None  # the arrays as tensors, made on the first read

    def description(self) -> dict[str, Any]:
        return {"images": len(self.labels)}

    def arrays(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) at the positions, as they are."""
        if len(positions) == len(self.labels) and np.array_equal(
            positions, np.arange(len(positions))
        ):
            return self.images, self.labels
        return self.images[positions], self.labels[positions]

    def records(self, positions, shuffle_seed, context, whole):
        """(image, label, example id) of the positions (None: all), this pipeline's share."""
        import tensorflow as tf

        if positions is None:
            positions = np.flatnonzero(self.labels >= 0)
        order = listed_share(positions, shuffle_seed, context, whole)
        if self._tensors is None:
            with tf.init_scope():  # eager tensors, shared by every pipeline's graph
                self._tensors = (tf.constant(self.images), tf.constant(self.labels))
        images, labels = self._tensors
        dataset = tf.data.Dataset.from_tensor_slices(order)
        return dataset.map(lambda i: (tf.gather(images, i), tf.gather(labels, i), i))

    def decode(self, encoded, example_id):
        return encoded  # the image itself


def open_idx(data_dir: str | os.PathLike | None = None, image_size: int | None = None) -> Source:
    """Fashion-MNIST's train and test splits (its IDX files read into arrays), images
    resized to image_size x image_size by the pipelines when given."""
    directory = _data_dir(data_dir)
    splits = {
        split: Split.whole(ArrayReader(*load_fashion_mnist(split, directory)))
        for split in FASHION_MNIST_FILES
    }
    size = image_size or 28
    return Source(
        name="fashion_mnist",
        class_names=FASHION_MNIST_CLASSES,
        input_shape=(size, size, 1),
        splits=splits,
        test_split="test",
        description={
            "kind": "fashion_mnist",
            "directory": str(directory.resolve()),
            "image_size": size,
            "channels": 1,
        },
        cache_dir=Path(DEFAULT_CACHE_DIR).expanduser(),
    )
