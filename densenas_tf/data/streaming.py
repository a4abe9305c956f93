"""Streamed image datasets: image folders, TFRecord shards and prepared tfds datasets.

Data the size of ImageNet do not fit in memory, so these sources never hold
pixels: each knows its examples by an *index* (file paths, record numbers or
tfds ids, with their labels) that is cheap to build, and ``tf.data`` reads,
decodes, resizes and augments the images in parallel while the model steps.
The index is what class lists, the search's per-class weight/architecture
split and the train/test division work on, so none of them reads a pixel.

``StreamingData`` is the streamed counterpart of ``data.ImageData`` (same
``name``, ``class_names``, ``num_classes``, ``input_shape``); its pipelines
yield what ``data.train_pipeline`` / ``data.eval_pipeline`` yield (float32
pixels 0..255, int32 labels) and take a ``tf.distribute.InputContext``, so that
under ``strategy.distribute_datasets_from_function`` each input pipeline reads
its own share and batches its replica's part of the global batch.
``open_data`` picks between the two by source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.files import write_text_atomic
from densenas_tf.core.runtime import Progress
from densenas_tf.data.loading import (
    SMALL_IMAGE_SIDE,
    DataError,
    ImageData,
    _augment_image,
    empty_class_error,
    list_image_folder,
    load_image_data,
    random_crop_box,
    tfds_builder,
)

# The description file that tools/write_tfrecords.py writes beside its shards.
TFRECORD_DESCRIPTION = "dataset.json"
TFRECORD_FORMAT = "densenas_tf.tfrecords"
TFRECORD_VERSION = 1
# The feature keys of one record.
IMAGE_KEY, LABEL_KEY, INDEX_KEY = "image/encoded", "image/class/label", "image/index"
# Sources held in memory by default when their decoded pixels take at most this many bytes.
IN_MEMORY_LIMIT_BYTES = 2 << 30
# Where channel statistics and tfds label indexes are cached when the data's own
# directory is not the place (an image folder, a tfds data directory).
DEFAULT_CACHE_DIR = Path(os.environ.get("DENSENAS_CACHE_DIR", "~/.cache/densenas_tf"))
# The share of the centre an evaluation crop keeps of large images (ImageNet's 224 of 256).
EVAL_CROP_FRACTION = 0.875


# --------------------------------------------------------------------------------------
# Class lists and splits, on labels only
# --------------------------------------------------------------------------------------


def read_class_list(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names (or synset ids), one a line; blank lines and '#' comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such class-list file; write one class name per line")
    names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: the class list is empty; write one class name per line")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: class {repeated[0]!r} is listed twice; list each class once")
    return tuple(names)


def select_classes(
    available: tuple[str, ...], wanted: tuple[str, ...] | None, where: str
) -> tuple[tuple[str, ...], np.ndarray]:
    """(the kept class names, remap): remap[old label] is the new label, -1 when dropped."""
    if wanted is None:
        return available, np.arange(len(available), dtype=np.int32)
    position = {name: i for i, name in enumerate(available)}
    missing = [name for name in wanted if name not in position]
    if missing:
        raise DataError(
            f"class {missing[0]!r} of the class list is not in {where} "
            f"({len(missing)} missing; it has {len(available)} classes, e.g. "
            f"{', '.join(available[:3])}); fix the class list or the data source"
        )
    remap = np.full(len(available), -1, np.int32)
    for new, name in enumerate(wanted):
        remap[position[name]] = new
    return tuple(wanted), remap


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


# --------------------------------------------------------------------------------------
# Readers: one per kind of source, each knowing its examples by an index
# --------------------------------------------------------------------------------------


def _shard_share(context) -> tuple[int, int]:
    """(number of input pipelines, this pipeline's index) of a tf.distribute.InputContext."""
    if context is None:
        return 1, 0
    return int(context.num_input_pipelines), int(context.input_pipeline_id)


# The first bytes of the image formats the pipelines decode (JPEG, PNG, GIF, BMP).
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def _read_checked(path, label, example_id):
    """A file's bytes; a file that is no image stops the pipeline with an error naming it."""
    import tensorflow as tf

    encoded = tf.io.read_file(path)
    is_image = tf.reduce_any(
        [tf.equal(tf.strings.substr(encoded, 0, len(s)), s) for s in IMAGE_SIGNATURES]
    )
    message = tf.strings.join(
        [path, ": not an image (JPEG, PNG, GIF or BMP); remove it from the image folder"]
    )
    with tf.control_dependencies([tf.debugging.Assert(is_image, [message])]):
        return tf.identity(encoded), label, example_id


# What a pipeline's error says when an image cannot be decoded (``data_error`` finds it).
UNREADABLE = "not a readable image"
_FOLDER_FIX = "remove the file or re-encode it (e.g. as PNG), then run again"
_RECORD_FIX = (
    "write the shards again with tools/write_tfrecords.py from a source without the damaged image"
)


def _decode_named(encoded, channels: int, where, fix: str):
    """The decoded image (uint8 [h, w, channels]); one that cannot be decoded stops
    the pipeline with an error naming it (``where``, a string tensor) and the fix.

    The decode runs in a one-element dataset whose failure leaves it empty (its
    errors ignored), so an empty stand-in image comes out instead and fails the
    assertion that names the file: no image is ever skipped.
    """
    import tensorflow as tf

    decoded = tf.data.Dataset.from_tensors(encoded).map(
        lambda e: tf.io.decode_image(e, channels=channels, expand_animations=False)
    )
    stand_in = tf.data.Dataset.from_tensors(tf.zeros([0, 0, channels], tf.uint8))
    image = decoded.ignore_errors().concatenate(stand_in).take(1).get_single_element()
    message = tf.strings.join([where, f": {UNREADABLE} (it could not be decoded); {fix}"])
    with tf.control_dependencies([tf.debugging.Assert(tf.size(image) > 0, [message])]):
        return tf.identity(image)


# The one-line messages the pipelines' assertions carry (see _read_checked, _decode_named).
_NAMED_FAILURES = (f": {UNREADABLE} (", ": not an image (")


def data_error(err: BaseException) -> DataError | None:
    """The one-line DataError behind a pipeline's tf.errors.InvalidArgumentError
    when it is a named data failure (an unreadable image); else None."""
    message = getattr(err, "message", None) or str(err)
    head = "assertion failed: ["
    if head not in message:
        return None
    line = message.split(head, 1)[1].split("\n", 1)[0].rstrip()
    line = line[:-1] if line.endswith("]") else line
    if not any(marker in line for marker in _NAMED_FAILURES):
        return None
    return DataError(line)


@contextlib.contextmanager
def named_data_errors():
    """Re-raises a pipeline's named data failure met while iterating in the block
    as a one-line DataError (other errors pass unchanged)."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        converted = data_error(err)
        if converted is None:
            raise
        raise converted from None


class CheckedBatches:
    """An iterable of (distributed) batches whose iteration turns a named data
    failure (an unreadable image met mid-run) into a one-line DataError."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        iterator = iter(self.batches)
        while True:
            with named_data_errors():
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
            yield batch

    def __getattr__(self, name: str):
        if name == "batches":  # not set yet (e.g. while copied): no recursion
            raise AttributeError(name)
        return getattr(self.batches, name)


class _FolderReader:
    """Image files listed in memory: read lazily, shuffled exactly by permutation."""

    def __init__(self, paths: np.ndarray, labels: np.ndarray, channels: int):
        self.paths, self.labels, self.channels = paths, labels, channels
        self._path_tensor = None  # the paths as one tensor, made on the first decode

    def description(self) -> dict[str, Any]:
        return {
            "files": len(self.paths),
            "first": str(self.paths[:1]),
            "last": str(self.paths[-1:]),
        }

    def records(self, positions: np.ndarray, shuffle_seed: int | None, context, whole: int):
        """(encoded bytes, label, example id) of the positions, this pipeline's share.

        ``whole`` > 0 trims the permuted list to a multiple of it first, so every
        pipeline gets the same number of examples (one per global batch slot)."""
        import tensorflow as tf

        order = np.asarray(positions, np.int64)
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(order)
        if whole:
            order = order[: len(order) - len(order) % whole]
        count, index = _shard_share(context)
        order = order[index::count]  # by example: each one lands in exactly one share
        dataset = tf.data.Dataset.from_tensor_slices((self.paths[order], self.labels[order], order))
        return dataset.map(_read_checked, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def decode(self, encoded, example_id):
        import tensorflow as tf

        if self._path_tensor is None:
            with tf.init_scope():  # an eager tensor, shared by every pipeline's graph
                self._path_tensor = tf.constant(self.paths)
        path = tf.gather(self._path_tensor, example_id)
        return _decode_named(encoded, self.channels, path, _FOLDER_FIX)


def _membership(positions: np.ndarray, size: int):
    """A bool tensor [size]: True at positions (None when all are kept)."""
    import tensorflow as tf

    if len(positions) == size:
        return None
    mask = np.zeros(size, bool)
    mask[positions] = True
    return tf.constant(mask)


def exact_share(
    counts: list[int],
    positions: np.ndarray,
    shuffle_seed: int | None,
    count: int,
    index: int,
    whole: int,
) -> tuple[np.ndarray, list[int]]:
    """(example positions, shard numbers in reading order) of pipeline ``index`` of ``count``.

    ``counts`` are the shards' sizes (shard k holds the positions after those
    of shards 0..k-1), so the division is exact without reading an example:
    the positions are permuted by the seed; ``whole`` > 0 drops the last
    ``len % whole`` of them (a seeded choice of fewer than one global batch,
    the same on every worker, different each epoch); the rest, ordered by
    shard (shards in a seeded order) and by position, are cut into ``count``
    consecutive runs of equal length (or lengths differing by one when nothing
    is dropped). A pipeline reads the shards its run touches: whole ones, and
    at most two that it shares with its neighbours, of which it keeps its own
    examples.
    """
    order = np.asarray(positions, np.int64)
    if shuffle_seed is not None:
        order = np.random.default_rng([int(shuffle_seed), 0]).permutation(order)
    if whole:
        order = order[: len(order) - len(order) % whole]
    rank = np.arange(len(counts))
    if shuffle_seed is not None:
        rank[np.random.default_rng([int(shuffle_seed), 1]).permutation(len(counts))] = np.arange(
            len(counts)
        )
    starts = np.concatenate([[0], np.cumsum(counts)])
    shard_of = np.searchsorted(starts, order, side="right") - 1
    run = np.array_split(order[np.lexsort((order, rank[shard_of]))], count)[index]
    shards = np.unique(np.searchsorted(starts, run, side="right") - 1)
    return np.sort(run), [int(k) for k in shards[np.argsort(rank[shards])]]


class _RecordReader:
    """TFRecord shards written by ``tfrecords.write_tfrecords``: each input pipeline
    reads an exact, equal share of the records (see ``exact_share``), files interleaved,
    records shuffled in a buffer."""

    def __init__(
        self,
        files: list[str],
        counts: list[int],
        labels: np.ndarray,
        remap,
        channels: int,
        where: str = "TFRecords",
    ):
        self.files, self.counts, self.channels = files, counts, channels
        self.raw_labels = labels  # as written, indexed by the record's image/index
        self.remap = remap
        self.labels = remap[labels]
        self.where = where

    def description(self) -> dict[str, Any]:
        return {"files": self.files, "records": int(sum(self.counts))}

    def records(self, positions, shuffle_seed, context, whole):
        import tensorflow as tf

        count, index = _shard_share(context)
        mine, shards = exact_share(self.counts, positions, shuffle_seed, count, index, whole)
        files = tf.data.Dataset.from_tensor_slices(
            tf.constant([self.files[k] for k in shards], tf.string)
        )
        dataset = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=max(1, min(len(shards), 16)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        spec = {
            IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
        }
        remap = tf.constant(self.remap, tf.int32)

        def parse(record):
            example = tf.io.parse_single_example(record, spec)
            label = tf.gather(remap, example[LABEL_KEY])
            return example[IMAGE_KEY], label, example[INDEX_KEY]

        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        mask = _membership(mine, len(self.labels))
        if mask is not None:
            dataset = dataset.filter(lambda encoded, label, i: tf.gather(mask, i))
        if shuffle_seed is not None and len(mine):
            dataset = dataset.shuffle(
                min(len(mine), 10_000), seed=shuffle_seed, reshuffle_each_iteration=False
            )
        return dataset

    def decode(self, encoded, example_id):
        import tensorflow as tf

        where = tf.strings.join([f"{self.where}: record ", tf.strings.as_string(example_id)])
        return _decode_named(encoded, self.channels, where, _RECORD_FIX)


class _TfdsReader:
    """A prepared tfds split read with ``builder.as_dataset``, images left encoded
    until the pipeline decodes them; its label index is built (and cached) on demand."""

    def __init__(self, builder, split: str, remap, channels: int, cache_dir: Path):
        self.builder, self.split, self.remap, self.channels = builder, split, remap, channels
        self.image_key, self.label_key = builder.info.supervised_keys
        self.cache_dir = cache_dir
        self._index = None

    def description(self) -> dict[str, Any]:
        info = self.builder.info
        return {
            "tfds": info.full_name,
            "split": self.split,
            "examples": int(info.splits[self.split].num_examples),
        }

    def _read(self, split: str, shuffle_seed, decode_images: bool = False):
        import tensorflow_datasets as tfds

        read_config = tfds.ReadConfig(
            add_tfds_id=True, shuffle_seed=shuffle_seed, try_autocache=False
        )
        decoders = None if decode_images else {self.image_key: tfds.decode.SkipDecoding()}
        return self.builder.as_dataset(
            split=split,
            shuffle_files=shuffle_seed is not None,
            decoders=decoders,
            read_config=read_config,
        )

    @property
    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """(tfds ids, labels as the dataset numbers them) of the split, in file order."""
        if self._index is None:
            self._index = _cached(self.cache_dir, "tfds_index", self.description(), self._scan)
        return np.asarray(self._index["ids"]), np.asarray(self._index["labels"], np.int32)

    def _scan(self) -> dict[str, Any]:
        """Reads the labels and ids only (images skipped undecoded), printing progress."""
        import tensorflow as tf

        total = int(self.builder.info.splits[self.split].num_examples)
        dataset = self._read(self.split, None).map(lambda ex: (ex["tfds_id"], ex[self.label_key]))
        ids, labels = [], []
        progress = Progress(
            f"indexing {self.builder.info.full_name} {self.split}", -(-total // 4096)
        )
        for batch_ids, batch_labels in dataset.batch(4096).prefetch(tf.data.AUTOTUNE):
            ids += [i.decode() for i in batch_ids.numpy()]
            labels += batch_labels.numpy().astype(int).tolist()
            progress.update({})
        return {"ids": ids, "labels": labels}

    @property
    def labels(self) -> np.ndarray:
        return self.remap[self.index[1]]

    def records(self, positions, shuffle_seed, context, whole):
        """(encoded image, label, example id) of this pipeline's share of the positions.

        One pipeline reading a whole split reads it as it is (no index needed).
        Otherwise the split's index (built once, cached) gives every example's
        position, and ``exact_share`` divides them by the split's shard sizes
        exactly as for TFRecords: each pipeline reads only the slices of the
        shards its run touches (``train[a:b]+...``) and keeps its own examples.
        """
        import tensorflow as tf

        count, index = _shard_share(context)
        mine = None
        split = self.split
        if positions is not None or count > 1:
            if positions is None:
                positions = np.flatnonzero(self.labels >= 0)
            lengths = [int(n) for n in self.builder.info.splits[self.split].shard_lengths]
            mine, shards = exact_share(lengths, positions, shuffle_seed, count, index, whole)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            # An empty run (more pipelines than examples) reads nothing: take(0) below.
            shards = shards or [0]
            split = "+".join(f"{self.split}[{starts[k]}:{starts[k + 1]}]" for k in shards)
        dataset = self._read(split, shuffle_seed)
        remap = tf.constant(self.remap, tf.int32)
        image_key, label_key = self.image_key, self.label_key

        def pick(example):
            label = tf.gather(remap, tf.cast(example[label_key], tf.int32))
            # A stable integer per example, for its augmentation seed.
            uid = tf.strings.to_hash_bucket_fast(example["tfds_id"], 1 << 62)
            return example[image_key], label, uid, example["tfds_id"]

        dataset = dataset.map(pick, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if mine is not None and not len(mine):
            dataset = dataset.take(0)
        elif mine is not None:
            ids = self.index[0][mine]
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(ids, tf.ones(len(ids), tf.int32)), 0
            )
            dataset = dataset.filter(lambda e, label, uid, key: table.lookup(key) > 0)
        elif np.any(self.remap < 0):
            dataset = dataset.filter(lambda e, label, uid, key: label >= 0)
        dataset = dataset.map(lambda e, label, uid, key: (e, label, uid))
        if shuffle_seed is not None and (mine is None or len(mine)):  # shuffle(0) is an error
            size = 10_000 if mine is None else min(len(mine), 10_000)
            dataset = dataset.shuffle(size, seed=shuffle_seed, reshuffle_each_iteration=False)
        return dataset

    def decode(self, encoded, example_id):
        feature = self.builder.info.features[self.image_key]
        import tensorflow as tf

        image = feature.decode_example(encoded)
        if image.shape.rank == 2:
            image = image[..., None]
        have = image.shape[-1]
        if have in (2, 4):
            image = image[..., :-1]
            have -= 1
        if have == self.channels or have is None:
            return image
        return (
            tf.image.grayscale_to_rgb(image)
            if self.channels == 3
            else tf.image.rgb_to_grayscale(image)
        )


# --------------------------------------------------------------------------------------
# Splits and the streamed dataset
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Some examples of one reader, by position in its index (None: all of them)."""

    reader: Any
    positions: np.ndarray | None
    size: int

    @property
    def num_examples(self) -> int:
        return self.size

    def labels(self) -> np.ndarray:
        """The labels of the split's examples (from the index; no pixels read)."""
        labels = self.reader.labels
        return labels if self.positions is None else labels[self.positions]

    def subset(self, positions_in_split: np.ndarray) -> Split:
        """The split's examples at the given positions (relative to this split)."""
        base = self._positions()
        chosen = np.sort(base[np.asarray(positions_in_split, np.int64)])
        return Split(self.reader, chosen, len(chosen))

    def _positions(self) -> np.ndarray:
        if self.positions is not None:
            return self.positions
        return np.flatnonzero(self.reader.labels >= 0)

    def records(self, shuffle_seed, context, whole: int = 0):
        positions = self.positions
        if positions is None and not isinstance(self.reader, _TfdsReader):
            positions = self._positions()
        return self.reader.records(positions, shuffle_seed, context, whole)


def _resize(image, size: tuple[int, int]):
    import tensorflow as tf

    return tf.image.resize(tf.cast(image, tf.float32), size, "bilinear")


def _prepare(image, example_id, size, channels, seed, augment: bool):
    """A decoded uint8 image [h, w, C] of any size as float32 [H, W, C] in 0..255.

    Augmented (``seed`` a stateless seed [2], folded with the example id): large
    targets get a random resized crop of the original image (area 8-100 %,
    aspect 3/4-4/3) and a flip, small ones the resize then ``augment_images``'s
    pad-and-crop and flip. Not augmented: large images are centre-cropped
    (``EVAL_CROP_FRACTION``) and resized, small ones resized.
    """
    import tensorflow as tf

    height, width = size
    large = max(height, width) > SMALL_IMAGE_SIDE
    if augment:
        image_seed = tf.random.experimental.stateless_fold_in(seed, example_id)
        if large:
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(image_seed, 2))
            begin, extent = random_crop_box(image, crop_seed)
            out = _resize(tf.slice(image, begin, extent), size)
            out = tf.image.stateless_random_flip_left_right(out, flip_seed)
        else:
            out = _augment_image(
                tf.ensure_shape(_resize(image, size), (height, width, channels)), image_seed
            )
    elif large:
        out = _resize(tf.image.central_crop(image, EVAL_CROP_FRACTION), size)
    else:
        out = _resize(image, size)
    return tf.ensure_shape(out, (height, width, channels))


@dataclasses.dataclass(frozen=True, eq=False)
class StreamingData:
    """A dataset read from disk as it is used; see the module docstring.

    ``description`` identifies the data (source, classes, size) for the caches
    and for a run's record; ``cache_dir`` is where channel statistics go.
    """

    name: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    train: Split
    test: Split
    description: Mapping[str, Any]
    cache_dir: Path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return self.train.num_examples

    @property
    def num_test(self) -> int:
        return self.test.num_examples

    # ----- pipelines -------------------------------------------------------------------
    def images(
        self,
        split: Split,
        batch_size: int,
        shuffle_seed: int | None = None,
        augment: bool = False,
        input_context=None,
        drop_remainder: bool = True,
        steps: int | None = None,
    ):
        """Batches of (float32 pixels 0..255 [B, H, W, C], int32 labels) of ``split``.

        ``batch_size`` is the global batch: with an ``input_context`` each
        pipeline reads its share of the examples and batches its replica's part
        (``get_per_replica_batch_size``). ``shuffle_seed`` fixes the order and
        the augmentation; None reads in index order. ``steps`` caps the batches
        (every pipeline then yields the same number). With ``drop_remainder``,
        the pipelines first leave out a seeded remainder of fewer than one
        global batch, then split the rest exactly: across the pipelines each
        other example is read once.
        An image that cannot be decoded stops the pipeline with an error
        naming it (``named_data_errors`` makes it a DataError).
        """
        import tensorflow as tf

        height, width, channels = self.input_shape
        per_replica = (
            input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size
        )
        whole = batch_size if drop_remainder else 0
        records = split.records(shuffle_seed, input_context, whole)
        seed = tf.constant([0 if shuffle_seed is None else int(shuffle_seed), 7], tf.int64)
        decode = split.reader.decode

        def load(encoded, label, example_id):
            image = decode(encoded, example_id)
            image = _prepare(image, example_id, (height, width), channels, seed, augment)
            return image, tf.cast(label, tf.int32)

        dataset = records.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(per_replica, drop_remainder=drop_remainder)
        if steps is not None:
            # One pipeline feeds all its replicas: each global step takes one
            # per-replica batch per replica from it.
            dataset = dataset.take(steps * replicas_per_pipeline(input_context))
        return dataset.prefetch(tf.data.AUTOTUNE)

    def train_dataset(
        self, batch_size: int, seed: int, augment: bool = True, epoch: int = 0, input_context=None
    ):
        """One training epoch (order and augmentation fixed by seed and epoch), as
        ``data.train_pipeline`` for arrays: last partial batch dropped."""
        steps = self.num_train // batch_size
        if steps < 1:
            raise DataError(
                f"batch_size {batch_size} exceeds the {self.num_train} training images; "
                "lower batch_size (the last partial batch is dropped)"
            )
        shuffle_seed = int(seed) * 1_000_003 + int(epoch)
        return self.images(
            self.train, batch_size, shuffle_seed, augment, input_context, True, steps
        )

    def eval_dataset(self, batch_size: int, input_context=None):
        """The test split in index order, not augmented, last partial batch kept."""
        return self.images(self.test, batch_size, None, False, input_context, False)

    # ----- statistics ------------------------------------------------------------------
    def channel_stats(
        self, limit: int | None = None, log: Callable[[str], None] = lambda line: None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (mean, std) of the training images as the model sees them
        (resized, not augmented), in pixel units, streamed and cached as JSON.

        ``limit`` reads an evenly spaced subset of that many images instead of all.
        """
        key = {**self.description, "statistics_of": "train", "limit": limit}
        stats = _cached(
            self.cache_dir, "channel_stats", key, lambda: self._stream_stats(limit, log)
        )
        return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)

    def _stream_stats(self, limit, log) -> dict[str, Any]:
        import tensorflow as tf

        split = self.train
        if limit is not None and limit < split.num_examples:
            split = split.subset(np.linspace(0, split.num_examples - 1, limit).astype(np.int64))
        batch = 256
        dataset = self.images(split, batch, drop_remainder=False).map(
            lambda x, y: (
                tf.reduce_sum(tf.cast(x, tf.float64), axis=[0, 1, 2]),
                tf.reduce_sum(tf.square(tf.cast(x, tf.float64)), axis=[0, 1, 2]),
                tf.cast(tf.size(x[..., 0]), tf.float64),
            )
        )
        channels = self.input_shape[2]
        total, total_sq, count = np.zeros(channels), np.zeros(channels), 0.0
        log(f"channel statistics of {self.name}: streaming {split.num_examples} images")
        progress = Progress(f"channel statistics of {self.name}", -(-split.num_examples // batch))
        with named_data_errors():
            for s, sq, n in dataset:
                total += s.numpy()
                total_sq += sq.numpy()
                count += float(n)
                progress.update({})
        if count == 0:
            raise DataError(f"{self.name}: no training images to compute channel statistics of")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        return {"mean": mean.tolist(), "std": std.tolist(), "pixels": count}


def _cached(cache_dir: Path, kind: str, key: Mapping[str, Any], make) -> dict[str, Any]:
    """The JSON cached for ``key`` in cache_dir (written atomically by make() on a miss)."""

    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"{kind}_{digest}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == json.loads(text):
            return cached["value"]
    value = make()
    try:
        write_text_atomic(path, json.dumps({"key": json.loads(text), "value": value}) + "\n")
    except OSError:
        pass  # a read-only cache only costs the recomputation next time
    return value


# --------------------------------------------------------------------------------------
# Opening sources
# --------------------------------------------------------------------------------------


def _list_folder(root: Path) -> tuple[list[str], list[list[Path]]]:
    """The image folder's listing: ``data.list_image_folder``, shared with memory."""
    return list_image_folder(root)


def _probe_image(path: Path) -> np.ndarray:
    """One image decoded, for a folder's default size and channel count."""
    import tensorflow as tf

    try:
        return tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as err:
        raise DataError(f"{path}: not a readable image ({err.message.strip()})") from err


def _divide(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions per class; a test fraction of 0 keeps every example for training."""
    if test_fraction == 0:
        return np.arange(len(labels)), np.zeros(0, np.int64)
    return split_per_class(labels, test_fraction, seed)


def _limit_split(split: Split, limit: int | None, seed: int, stream: int) -> Split:
    """The first ``limit`` examples of a seeded permutation (like data._limit)."""
    if limit is None or limit >= split.num_examples:
        return split
    keep = np.random.default_rng([seed, stream]).permutation(split.num_examples)[:limit]
    return split.subset(keep)


def open_image_folder(
    root: str | os.PathLike,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    channels: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> StreamingData:
    """A folder of ``<class>/<image>`` files, streamed; a seeded per-class test part.

    Only the file names are read here, and one image (the first) when the size or
    channel count is not given: its size and channels become the data's.
    """
    root = Path(root)
    names, files = _list_folder(root)
    wanted = read_class_list(class_list) if class_list else None
    kept, remap = select_classes(tuple(names), wanted, f"the image folder {root}")
    paths, labels = [], []
    for old, found in enumerate(files):
        if remap[old] < 0:
            continue
        if not found:
            raise empty_class_error(root / names[old])
        paths += [str(p) for p in found]
        labels += [int(remap[old])] * len(found)
    if image_size is None or channels is None:
        first = _probe_image(Path(paths[0]))
        channels = channels or (1 if first.shape[-1] <= 2 else 3)
        if image_size is None:
            if first.shape[0] != first.shape[1]:
                raise DataError(
                    f"{paths[0]} is {first.shape[0]}x{first.shape[1]} pixels, not square; "
                    "pass image_size"
                )
            image_size = int(first.shape[0])
    label_array = np.asarray(labels, np.int32)
    reader = _FolderReader(np.asarray(paths), label_array, channels)
    train_pos, test_pos = _divide(label_array, test_fraction, seed)
    description = {
        "kind": "image_folder",
        "root": str(root.resolve()),
        "classes": list(kept),
        "image_size": image_size,
        "channels": channels,
        "test_fraction": test_fraction,
        "seed": seed,
        **reader.description(),
    }
    return StreamingData(
        name=root.resolve().name,
        class_names=kept,
        input_shape=(image_size, image_size, channels),
        train=Split(reader, train_pos, len(train_pos)),
        test=Split(reader, test_pos, len(test_pos)),
        description=description,
        cache_dir=Path(cache_dir or DEFAULT_CACHE_DIR).expanduser(),
    )


def read_tfrecord_description(directory: str | os.PathLike) -> dict[str, Any]:
    """The checked ``dataset.json`` of a TFRecord directory."""
    directory = Path(directory)
    path = directory / TFRECORD_DESCRIPTION
    if not directory.is_dir():
        raise DataError(
            f"{directory}: no such TFRecord directory; write one with tools/write_tfrecords.py"
        )
    if not path.is_file():
        raise DataError(
            f"{directory}: no {TFRECORD_DESCRIPTION} (not written by tools/write_tfrecords.py, "
            "or the write did not finish); write the shards again"
        )
    description = json.loads(path.read_text())
    if description.get("format") != TFRECORD_FORMAT:
        raise DataError(f"{path}: not a {TFRECORD_FORMAT} description; rewrite the shards")
    for split in description.get("splits", {}).values():
        for shard in split["shards"]:
            if not (directory / shard["file"]).is_file():
                raise DataError(
                    f"{directory / shard['file']}: a shard named in {path} is missing; "
                    "copy it back or write the shards again"
                )
    return description


def open_tfrecords(
    directory: str | os.PathLike,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> StreamingData:
    """TFRecord shards and their ``dataset.json`` (tools/write_tfrecords.py), streamed.

    The description holds every record's label, so class lists and splits need
    no record read. Without a "test" split, a seeded per-class part of "train"
    is the test part. Channel statistics are cached in the directory itself.
    """
    directory = Path(directory)
    description = read_tfrecord_description(directory)
    splits = description["splits"]
    if "train" not in splits:
        raise DataError(
            f"{directory}: no 'train' split (splits: {sorted(splits)}); write one with "
            "tools/write_tfrecords.py --split=train"
        )
    names = tuple(description["class_names"])
    wanted = read_class_list(class_list) if class_list else None
    kept, remap = select_classes(names, wanted, f"the TFRecords in {directory}")
    stored_size = description.get("image_size")
    image_size = image_size or stored_size
    if image_size is None:
        raise DataError(f"{directory}: the images were written at their own sizes; pass image_size")
    channels = int(description["channels"])

    def reader(split: str) -> _RecordReader:
        shards = splits[split]["shards"]
        return _RecordReader(
            [str(directory / s["file"]) for s in shards],
            [int(s["count"]) for s in shards],
            np.asarray(splits[split]["labels"], np.int32),
            remap,
            channels,
            f"{directory} ({split} split)",
        )

    train_reader = reader("train")
    train_all = np.flatnonzero(train_reader.labels >= 0)
    if "test" in splits:
        test_reader = reader("test")
        test_all = np.flatnonzero(test_reader.labels >= 0)
        train = Split(train_reader, train_all, len(train_all))
        test = Split(test_reader, test_all, len(test_all))
    else:
        first, second = _divide(train_reader.labels[train_all], test_fraction, seed)
        train = Split(train_reader, train_all[first], len(first))
        test = Split(train_reader, train_all[second], len(second))
    writable = os.access(directory, os.W_OK)
    return StreamingData(
        name=description.get("name") or directory.resolve().name,
        class_names=kept,
        input_shape=(int(image_size), int(image_size), channels),
        train=train,
        test=test,
        description={
            "kind": "tfrecord",
            "directory": str(directory.resolve()),
            "classes": list(kept),
            "image_size": image_size,
            "channels": channels,
            "records": {k: len(v["labels"]) for k, v in splits.items()},
            "test_fraction": None if "test" in splits else test_fraction,
            "seed": seed,
        },
        # A given cache directory first; else beside the shards where that is writable.
        cache_dir=Path(cache_dir).expanduser()
        if cache_dir
        else (directory if writable else Path(DEFAULT_CACHE_DIR).expanduser()),
    )


def open_tfds(
    name: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> StreamingData:
    """A prepared tfds dataset streamed with ``builder.as_dataset``.

    Its "test" split (else "validation", else a seeded per-class part of
    "train") is the test part. A class list or a per-class division needs the
    split's labels: they are read once without decoding images and cached.
    """
    builder = tfds_builder(name, data_dir)
    info = builder.info
    image_key, label_key = info.supervised_keys
    image_feature = info.features[image_key]
    shape = tuple(image_feature.shape)
    names = tuple(getattr(info.features[label_key], "names", None) or ())
    if not names:
        raise DataError(f"tensorflow-datasets {name!r}: its labels have no class names")
    wanted = read_class_list(class_list) if class_list else None
    kept, remap = select_classes(names, wanted, f"tensorflow-datasets {name!r}")
    channels = 1 if len(shape) == 2 or (shape[-1] or 3) <= 2 else 3
    if image_size is None:
        if len(shape) < 2 or shape[0] is None or shape[0] != shape[1]:
            raise DataError(
                f"tensorflow-datasets {name!r} has images of shape {shape}, not one square "
                "size; pass image_size"
            )
        image_size = int(shape[0])
    cache = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()

    def whole(split: str) -> Split:
        reader = _TfdsReader(builder, split, remap, channels, cache)
        if wanted is None:
            return Split(reader, None, int(info.splits[split].num_examples))
        positions = np.flatnonzero(reader.labels >= 0)
        return Split(reader, positions, len(positions))

    test_name = next((s for s in ("test", "validation") if s in info.splits), None)
    train = whole("train")
    if test_name:
        test = whole(test_name)
    elif test_fraction == 0:
        test = Split(train.reader, np.zeros(0, np.int64), 0)
    else:
        first, second = split_per_class(train.labels(), test_fraction, seed)
        train, test = train.subset(first), train.subset(second)
    return StreamingData(
        name=info.name,
        class_names=kept,
        input_shape=(int(image_size), int(image_size), channels),
        train=train,
        test=test,
        description={
            "kind": "tfds",
            "tfds": info.full_name,
            "data_dir": str(builder.data_dir),
            "classes": list(kept),
            "image_size": image_size,
            "channels": channels,
            "test_split": test_name,
            "test_fraction": None if test_name else test_fraction,
            "seed": seed,
        },
        cache_dir=cache,
    )


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


def sample_image_data(
    data: StreamingData, train_count: int, test_count: int, seed: int = 0
) -> ImageData:
    """At most ``train_count`` training and ``test_count`` test images of a stream,
    read into memory (resized, not augmented): what a check or a calibration
    needs, never the whole source. The images are a seeded choice from the
    index; a whole tfds split (no index built yet) gives its first images in
    file order instead (tfds stores its examples shuffled), so that no pass
    over the split is needed to choose them.
    """

    def sample(split: Split, count: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        if count < split.num_examples:
            if split.positions is None and isinstance(split.reader, _TfdsReader):
                return _read_into_memory(data, split, limit=count)
            split = _limit_split(split, count, seed, stream)
        return _read_into_memory(data, split)

    train_images, train_labels = sample(data.train, train_count, 0)
    test_images, test_labels = sample(data.test, test_count, 1)
    return ImageData(
        data.name, train_images, train_labels, test_images, test_labels, data.class_names
    )


def _estimated_bytes(data: StreamingData) -> int:
    return int(np.prod(data.input_shape)) * (data.num_train + data.num_test)


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


def open_data(source: Mapping[str, Any], stream: bool | None = None) -> ImageData | StreamingData:
    """The data of a source mapping (the keys of ``SOURCE_KEYS``), in memory or streamed.

    Fashion-MNIST is held in memory. TFRecords stream, unless ``stream`` is
    False: then they are decoded once into memory (``to_image_data``), a cache
    for data that fits. A tfds dataset or an image folder streams when
    ``stream`` is true, or when ``stream`` is None and its pixels would take
    more than ``IN_MEMORY_LIMIT_BYTES`` (or a class list is given); else it is
    read into memory as before. The pixels counted are the whole source's, not
    those left by train_limit / test_limit: memory reads all before it limits.
    """

    values = dict(source)
    seed = values.pop("data_seed", values.pop("seed", 0)) or 0
    streaming_keys = ("tfrecord_dir", "class_list", "data_cache_dir", "stream")
    tfrecord_dir = values.pop("tfrecord_dir", None)
    class_list = values.pop("class_list", None)
    cache_dir = values.pop("data_cache_dir", None)
    if "stream" in values:
        requested = values.pop("stream")
        if isinstance(requested, str):  # the --stream flag's "true" / "false"
            requested = {"true": True, "false": False}[requested.lower()]
        stream = requested if stream is None else stream
    for key in streaming_keys:
        values.pop(key, None)
    train_limit, test_limit = values.get("train_limit"), values.get("test_limit")
    if not (tfrecord_dir or values.get("tfds_name") or values.get("image_folder")):
        if stream or class_list:
            raise DataError(
                f"{values.get('dataset', 'fashion_mnist')} is read into memory; streaming and "
                "class lists need tfds_name, image_folder or tfrecord_dir"
            )
        return load_image_data(**values, seed=seed)
    try:
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
    except DataError:
        if tfrecord_dir or class_list or stream:
            raise
        # What the stream cannot open (e.g. non-square images without image_size),
        # memory may still hold; else its own error names the problem.
        return load_image_data(**values, seed=seed)
    # Judged on the whole source: load_image_data reads all of it before it limits.
    whole_bytes = _estimated_bytes(data)
    data = limit_stream(data, train_limit, test_limit, seed)
    if tfrecord_dir and stream is False:
        return to_image_data(data)  # decoded once, held in memory: a cache for data that fits
    if tfrecord_dir or class_list or stream:
        return data
    if stream is None and whole_bytes > IN_MEMORY_LIMIT_BYTES:
        return data
    return load_image_data(**values, seed=seed)


# --------------------------------------------------------------------------------------
# The search's two parts of a streamed training set
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SearchSplit:
    """One part (weights or architecture) of the search's streamed data.

    The search's counterpart of a pair of arrays: ``num_examples`` images,
    normalised per channel with the training set's statistics (``mean``,
    ``std`` in pixel units), augmented (``augment``) only when shuffled.
    """

    data: StreamingData
    split: Split
    mean: np.ndarray
    std: np.ndarray
    augment: bool = False

    @property
    def num_examples(self) -> int:
        return self.split.num_examples

    def dataset(self, batch_size: int, shuffle_seed: int | None = None, input_context=None):
        """Normalised batches of one pass (every pipeline yields num_examples // batch_size)."""
        import tensorflow as tf

        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        dataset = self.data.images(
            self.split,
            batch_size,
            shuffle_seed,
            self.augment and shuffle_seed is not None,
            input_context,
            True,
            self.num_examples // batch_size,
        )
        return dataset.map(lambda x, y: ((x - mean) / std, y)).prefetch(tf.data.AUTOTUNE)

    def distribute(
        self, strategy, batch_size: int, shuffle_seed: int | None, skip: int = 0
    ) -> CheckedBatches:
        """The pass as a distributed dataset: each input pipeline reads its own share
        (``distribute_datasets_from_function``), the first ``skip`` steps left out.
        Iterating it raises a one-line DataError for an image that cannot be decoded."""

        def per_pipeline(context):
            dataset = self.dataset(batch_size, shuffle_seed, context)
            return dataset.skip(skip * replicas_per_pipeline(context)) if skip else dataset

        return CheckedBatches(strategy.distribute_datasets_from_function(per_pipeline))


def replicas_per_pipeline(input_context) -> int:
    """How many replicas one input pipeline feeds (1 without a context): a
    global step takes that many per-replica batches from it."""
    if input_context is None:
        return 1
    return max(1, input_context.num_replicas_in_sync // input_context.num_input_pipelines)


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


def _read_into_memory(
    data: StreamingData, split: Split, batch_size: int = 256, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, int32 labels) of a split (its first ``limit`` only, when given),
    resized, not augmented, in reading order."""
    steps = None if limit is None else -(-limit // batch_size)
    images, labels = [], []
    with named_data_errors():
        for x, y in data.images(split, batch_size, drop_remainder=False, steps=steps):
            images.append(np.clip(np.round(x.numpy()), 0, 255).astype(np.uint8))
            labels.append(y.numpy().astype(np.int32))
    if not images:
        return np.zeros((0, *data.input_shape), np.uint8), np.zeros(0, np.int32)
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def to_image_data(data: StreamingData, batch_size: int = 256) -> ImageData:
    """A streamed dataset read into memory (resized, not augmented) as a data.ImageData;
    for small ones, or ones limited by train_limit / test_limit."""
    train_images, train_labels = _read_into_memory(data, data.train, batch_size)
    test_images, test_labels = _read_into_memory(data, data.test, batch_size)
    return ImageData(
        data.name, train_images, train_labels, test_images, test_labels, data.class_names
    )
