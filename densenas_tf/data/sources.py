"""Where the rest of the package gets its data: splits and the source entry points.

A source is one of four formats, each opened by its module as a
``stream.Source``: Fashion-MNIST's IDX files (``idx``), an image folder
(``image_folder``), a prepared tensorflow-datasets dataset (``prepared_tfds``)
or TFRecord shards (``tfrecords``). Here it becomes a
``pipelines.StreamingData`` of a train and a test part, the same way for all:
the source's own test split when it has one, else a seeded per-class part of
its training split (``split_per_class``); ``train_limit`` / ``test_limit``
keep a seeded choice of each.

Held in memory, a source is a cache of that same stream: ``load_image_data``
and ``hold_in_memory`` read the stream's images (resized, not augmented) into
an ``ImageData``. ``open_data`` picks memory or stream for a source mapping
(the keys of ``SOURCE_KEYS``); ``search_splits`` divides a stream's training
part between the search's weights and architecture. Every reading error is a
``DataError``; ``data_error`` finds the one behind a pipeline's TensorFlow
error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from densenas_tf.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist, open_idx
from densenas_tf.data.image_folder import open_folder
from densenas_tf.data.pipelines import SearchSplit, StreamingData
from densenas_tf.data.prepared_tfds import open_prepared
from densenas_tf.data.stream import (
    DataError,
    ImageData,
    Source,
    Split,
    check_class_count,
    data_error,
    named_data_errors,
    non_negative_int,
    positive_int,
    source_label,
)
from densenas_tf.data.tfrecords import open_records

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "IN_MEMORY_LIMIT_BYTES",
    "SOURCE_KEYS",
    "DataError",
    "ImageData",
    "SearchSplit",
    "StreamingData",
    "data_error",
    "hold_in_memory",
    "limit_stream",
    "load_fashion_mnist",
    "load_image_data",
    "named_data_errors",
    "open_data",
    "open_fashion_mnist",
    "open_image_folder",
    "open_stream",
    "open_tfds",
    "open_tfrecords",
    "sample_image_data",
    "search_splits",
    "split_indices",
    "split_per_class",
    "to_image_data",
]

# Built-in datasets that ``load_image_data(dataset=...)`` reads without tfds or a folder.
DATASETS = ("fashion_mnist",)
# Sources held in memory by default when their decoded pixels take at most this many bytes.
IN_MEMORY_LIMIT_BYTES = 2 << 30
# The keys of a data-source mapping (the binaries' data flags, a recipe's
# ``data`` section, a run's recorded source).
SOURCE_KEYS = (
    "dataset",
    "data_dir",
    "tfds_name",
    "tfds_data_dir",
    "image_folder",
    "image_size",
    "test_fraction",
    "data_seed",
    "train_limit",
    "test_limit",
    "tfrecord_dir",
    "class_list",
    "stream",
    "data_cache_dir",
)


# --------------------------------------------------------------------------------------
# Deterministic splits
# --------------------------------------------------------------------------------------


def split_indices(count: int, second_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic random split of range(count): (first part, second part)."""
    if not 0.0 < second_fraction < 1.0:
        raise DataError(f"split fraction must be in (0, 1), got {second_fraction}")
    order = np.random.default_rng(seed).permutation(count)
    cut = count - round(count * second_fraction)
    return np.sort(order[:cut]), np.sort(order[cut:])


def split_per_class(
    labels: np.ndarray, second_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions into ``labels`` divided per class: (first part, second part), sorted.

    Each class's examples are permuted by (seed, class) and round(n * fraction)
    of them go to the second part, so every class keeps its share in both and
    the division depends on the labels and the seed only.
    """
    if not 0.0 < second_fraction < 1.0:
        raise DataError(f"split fraction must be in (0, 1), got {second_fraction}")
    first, second = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = np.random.default_rng([int(seed), int(label)]).permutation(members)
        cut = len(order) - round(len(order) * second_fraction)
        first.append(order[:cut])
        second.append(order[cut:])
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def _limit_draw(split: Split, limit: int, seed: int, stream: int) -> np.ndarray:
    """The positions in the split of a seeded choice of ``limit`` examples, in draw order."""
    return np.random.default_rng([seed, stream]).permutation(split.num_examples)[:limit]


def _limit_split(split: Split, limit: int | None, seed: int, stream: int) -> Split:
    """The split's seeded choice of ``limit`` examples (all of them when it has fewer)."""
    if limit is None or limit >= split.num_examples:
        return split
    return split.subset(_limit_draw(split, limit, seed, stream))


def with_test_part(source: Source, test_fraction: float, seed: int) -> StreamingData:
    """A source's train and test parts: its own test split, else a seeded per-class
    ``test_fraction`` of its train split (none when 0)."""
    train = source.splits["train"]
    check_class_count(
        source.class_names,
        source_label(source.description, source.name),
        train.labels() if train.reader.indexed else None,
    )
    if source.test_split:
        test = source.splits[source.test_split]
    elif test_fraction == 0:
        test = Split(train.reader, np.zeros(0, np.int64), 0)
    else:
        first, second = split_per_class(train.labels(), test_fraction, seed)
        train, test = train.subset(first), train.subset(second)
    return StreamingData(
        name=source.name,
        class_names=source.class_names,
        input_shape=source.input_shape,
        train=train,
        test=test,
        description={
            **source.description,
            "test_fraction": None if source.test_split else test_fraction,
            "seed": seed,
        },
        cache_dir=source.cache_dir,
    )


def limit_stream(
    data: StreamingData, train_limit: int | None, test_limit: int | None, seed: int
) -> StreamingData:
    """The data with at most train_limit / test_limit examples per split (a seeded choice)."""
    if train_limit is None and test_limit is None:
        return data
    train = _limit_split(data.train, train_limit, seed, 0)
    test = _limit_split(data.test, test_limit, seed, 1)
    description = {**data.description, "train_limit": train_limit, "test_limit": test_limit}
    return dataclasses.replace(data, train=train, test=test, description=description)


# --------------------------------------------------------------------------------------
# Opening streams
# --------------------------------------------------------------------------------------


def open_fashion_mnist(
    data_dir: str | os.PathLike | None = None, image_size: int | None = None
) -> StreamingData:
    """Fashion-MNIST's IDX files (``idx``): its train and test splits."""
    return with_test_part(open_idx(data_dir, image_size), 0.0, 0)


def open_image_folder(
    root: str | os.PathLike,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    channels: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> StreamingData:
    """A folder of ``<class>/<image>`` files (``image_folder``); a seeded per-class test part."""
    source = open_folder(root, image_size, class_list, channels, cache_dir)
    return with_test_part(source, test_fraction, seed)


def open_tfrecords(
    directory: str | os.PathLike,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> StreamingData:
    """TFRecord shards (``tfrecords``); without a "test" split, a seeded per-class
    part of "train" is the test part. The labels come from the description, so
    class lists and divisions read no record."""
    source = open_records(directory, image_size, class_list, cache_dir)
    return with_test_part(source, test_fraction, seed)


def open_tfds(
    name: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> StreamingData:
    """A prepared tfds dataset (``prepared_tfds``): its "test" split (else
    "validation", else a seeded per-class part of "train") is the test part."""
    source = open_prepared(name, data_dir, image_size, class_list, cache_dir)
    return with_test_part(source, test_fraction, seed)


def open_stream(
    tfds_name: str | None = None,
    tfds_data_dir: str | os.PathLike | None = None,
    image_folder: str | os.PathLike | None = None,
    tfrecord_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> StreamingData:
    """Opens the one streaming source given (tfds, image folder or TFRecord directory)."""
    given = [
        k
        for k, v in (
            ("tfds_name", tfds_name),
            ("image_folder", image_folder),
            ("tfrecord_dir", tfrecord_dir),
        )
        if v
    ]
    if len(given) != 1:
        raise DataError(
            f"pass exactly one streaming source (tfds_name, image_folder or tfrecord_dir), "
            f"got {given or 'none'}"
        )
    common = dict(
        image_size=image_size,
        class_list=class_list,
        test_fraction=test_fraction,
        seed=seed,
        cache_dir=cache_dir,
    )
    if tfds_name:
        data = open_tfds(tfds_name, tfds_data_dir, **common)
    elif image_folder:
        data = open_image_folder(image_folder, **common)
    else:
        data = open_tfrecords(tfrecord_dir, **common)
    return limit_stream(data, train_limit, test_limit, seed)


# --------------------------------------------------------------------------------------
# Held in memory: a cache of the stream
# --------------------------------------------------------------------------------------


def to_image_data(data: StreamingData, batch_size: int = 256) -> ImageData:
    """A stream read into memory (resized, not augmented) as an ``ImageData``, each
    split in reading order."""
    train_images, train_labels = data.arrays(data.train, batch_size)
    test_images, test_labels = data.arrays(data.test, batch_size)
    return ImageData(
        data.name, train_images, train_labels, test_images, test_labels, data.class_names
    )


def _held(data: StreamingData, split: Split, limit: int | None, seed: int, stream: int):
    """(images, labels) of a split, or of a seeded choice of ``limit`` of its
    examples in the order drawn (only those are read)."""
    if limit is None:
        return data.arrays(split)
    keep = _limit_draw(split, limit, seed, stream)
    images, labels = data.arrays(split.subset(keep))  # read in position order
    order = np.searchsorted(np.sort(keep), keep)
    return images[order], labels[order]


def hold_in_memory(
    data: StreamingData,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> ImageData:
    """The stream's images (resized, not augmented) held in memory, at most
    ``train_limit`` / ``test_limit`` of each split: the examples ``limit_stream``
    keeps, in the order of the seeded draw that chose them."""
    train_images, train_labels = _held(data, data.train, train_limit, seed, 0)
    test_images, test_labels = _held(data, data.test, test_limit, seed, 1)
    return ImageData(
        data.name, train_images, train_labels, test_images, test_labels, data.class_names
    )


def sample_image_data(
    data: StreamingData, train_count: int, test_count: int, seed: int = 0
) -> ImageData:
    """At most ``train_count`` training and ``test_count`` test images of a stream,
    read into memory (resized, not augmented): what a check or a calibration
    needs, never the whole source. The images are a seeded choice from the
    index; a whole split whose index needs a pass over the source (tfds) gives
    its first images in file order instead (tfds stores its examples
    shuffled), so that no pass over the split is needed to choose them.
    """

    def sample(split: Split, count: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        if count < split.num_examples:
            if split.positions is None and not split.reader.indexed:
                return data.arrays(split, limit=count)
            split = _limit_split(split, count, seed, stream)
        return data.arrays(split)

    train_images, train_labels = sample(data.train, train_count, 0)
    test_images, test_labels = sample(data.test, test_count, 1)
    return ImageData(
        data.name, train_images, train_labels, test_images, test_labels, data.class_names
    )


def _check_request(image_size, train_limit, test_limit, seed) -> None:
    if image_size is not None:
        positive_int(image_size, "image_size", "pass the side in pixels, or None")
    for what, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None:
            positive_int(limit, what, "pass a number of images, or None for all")
    non_negative_int(seed, "seed")


def load_image_data(
    dataset: str = "fashion_mnist",
    data_dir: str | os.PathLike | None = None,
    tfds_name: str | None = None,
    tfds_data_dir: str | os.PathLike | None = None,
    image_folder: str | os.PathLike | None = None,
    image_size: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> ImageData:
    """Loads an image classification dataset into memory, offline, as an ``ImageData``.

    The source is, in this order of precedence (pass at most one of the first two):

    * ``tfds_name``: a tensorflow-datasets dataset already prepared in
      ``tfds_data_dir`` (default: tfds's own, ``~/tensorflow_datasets``). Nothing
      is downloaded.
    * ``image_folder``: ``image_folder/<class name>/*.{png,jpg,jpeg,bmp,gif}``,
      classes sorted by name. Images take the channel count of the first image
      (others are converted, grayscale <-> RGB; alpha channels are dropped).
    * else ``dataset``, one of ``DATASETS``: Fashion-MNIST from its IDX files in
      ``data_dir`` (default: Debian's directory).

    The source is opened as a stream (``open_stream``: its test split, else a
    per-class ``test_fraction`` of its training images seeded by ``seed``) and
    held in memory (``hold_in_memory``). ``image_size`` resizes every image to
    image_size x image_size (bilinear; sides over ``pipelines.SMALL_IMAGE_SIDE``
    centre-cropped first, as evaluation sees them); without it, all images must
    have the size of the first. ``train_limit`` and ``test_limit`` keep a choice
    of N images of each split seeded by ``seed``; only those are read.
    """
    _check_request(image_size, train_limit, test_limit, seed)
    if tfds_name and image_folder:
        raise DataError(
            f"both tfds_name={tfds_name!r} and image_folder={str(image_folder)!r} given; "
            "pass only one data source"
        )
    if tfds_name or image_folder:
        data = open_stream(
            tfds_name=tfds_name,
            tfds_data_dir=tfds_data_dir,
            image_folder=image_folder,
            image_size=image_size,
            test_fraction=test_fraction,
            seed=seed,
        )
    elif dataset == "fashion_mnist":
        data = open_fashion_mnist(data_dir, image_size)
    else:
        raise DataError(
            f"unknown dataset {dataset!r}; the built-in datasets are {list(DATASETS)}, "
            "or pass tfds_name (a prepared tensorflow-datasets dataset) or image_folder "
            "(a folder with one sub-folder of images per class)"
        )
    return hold_in_memory(data, train_limit, test_limit, seed)


def _estimated_bytes(data: StreamingData) -> int:
    return int(np.prod(data.input_shape)) * (data.num_train + data.num_test)


def open_data(source: Mapping[str, Any], stream: bool | None = None) -> ImageData | StreamingData:
    """The data of a source mapping (the keys of ``SOURCE_KEYS``), in memory or streamed.

    Fashion-MNIST is held in memory. TFRecords stream, unless ``stream`` is
    False: then they are held in memory. A tfds dataset or an image folder
    streams when ``stream`` is true, or when ``stream`` is None and its pixels
    would take more than ``IN_MEMORY_LIMIT_BYTES`` (or a class list is given);
    else it is held in memory. In memory, a source is a cache of its stream
    (``hold_in_memory``). The pixels counted are the whole source's, not
    those left by train_limit / test_limit, so that the limits never change
    where the data are held.
    """

    values = dict(source)
    seed = values.pop("data_seed", values.pop("seed", 0)) or 0
    tfrecord_dir = values.pop("tfrecord_dir", None)
    class_list = values.pop("class_list", None)
    cache_dir = values.pop("data_cache_dir", None)
    if "stream" in values:
        requested = values.pop("stream")
        if isinstance(requested, str):  # the --stream flag's "true" / "false"
            requested = {"true": True, "false": False}[requested.lower()]
        stream = requested if stream is None else stream
    train_limit, test_limit = values.get("train_limit"), values.get("test_limit")
    if not (tfrecord_dir or values.get("tfds_name") or values.get("image_folder")):
        if stream or class_list:
            raise DataError(
                f"{values.get('dataset', 'fashion_mnist')} is read into memory; streaming and "
                "class lists need tfds_name, image_folder or tfrecord_dir"
            )
        return load_image_data(**values, seed=seed)
    data = open_stream(
        tfds_name=values.get("tfds_name"),
        tfds_data_dir=values.get("tfds_data_dir"),
        image_folder=values.get("image_folder"),
        tfrecord_dir=tfrecord_dir,
        image_size=values.get("image_size"),
        class_list=class_list,
        test_fraction=values.get("test_fraction", 0.2),
        seed=seed,
        cache_dir=cache_dir,
    )
    held = (tfrecord_dir and stream is False) or not (
        tfrecord_dir
        or class_list
        or stream
        or (stream is None and _estimated_bytes(data) > IN_MEMORY_LIMIT_BYTES)
    )
    if held:
        _check_request(values.get("image_size"), train_limit, test_limit, seed)
        return hold_in_memory(data, train_limit, test_limit, seed)
    return limit_stream(data, train_limit, test_limit, seed)


def search_splits(
    data: StreamingData,
    arch_fraction: float,
    seed: int,
    augment_weights: bool = False,
    stats_limit: int | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[SearchSplit, SearchSplit]:
    """(weight part, architecture part) of the training set, divided per class by
    seed from the index (no pixels read), normalised with its channel statistics."""
    weight, arch = split_per_class(data.train.labels(), arch_fraction, seed)
    mean, std = data.channel_stats(stats_limit, log)
    std = np.maximum(std, 1e-3)  # a constant channel stays finite
    return (
        SearchSplit(data, data.train.subset(weight), mean, std, augment_weights),
        SearchSplit(data, data.train.subset(arch), mean, std, False),
    )
