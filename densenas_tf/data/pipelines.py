"""Augmentation and the tf.data pipelines, for arrays and for streams.

Arrays held in memory: ``make_dataset`` (normalised with the Fashion-MNIST
statistics, for the architecture search) and ``train_pipeline`` /
``eval_pipeline`` (float32 pixels in 0..255, for training a found architecture
whose model carries its own normalisation), with deterministic, seeded
augmentation (``augment_images``), and ``channel_stats``.

Streams: ``StreamingData``, a train and a test ``stream.Split`` with the
pipelines that read them; they yield what ``train_pipeline`` / ``eval_pipeline``
yield and take a ``tf.distribute.InputContext``, so that under
``strategy.distribute_datasets_from_function`` each input pipeline reads its
own share (``exact_share``) and batches its replica's part of the global
batch. ``SearchSplit`` is one part of the search's streamed data, normalised
and distributed. ``StreamingData.arrays`` reads a split into memory: what the
model sees of it unaugmented (``unaugmented``), the cache ``ImageData`` holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.runtime import Progress
from densenas_tf.data.stream import (
    CheckedBatches,
    DataError,
    Split,
    cached,
    check_images_and_labels,
    named_data_errors,
    non_negative_int,
    positive_int,
)

# Mean and standard deviation of the Fashion-MNIST training pixels (scaled to [0, 1]).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
# Images whose longer side is at most this many pixels get pad-and-crop augmentation;
# larger ones get a random resized crop.
SMALL_IMAGE_SIDE = 64
# The share of the centre an evaluation crop keeps of large images (ImageNet's 224 of 256).
EVAL_CROP_FRACTION = 0.875


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


def split_size(split) -> int:
    """The images of a search split: (images, labels) arrays or a streamed SearchSplit."""
    return split.num_examples if hasattr(split, "num_examples") else len(split[0])


def steps_per_pass(batch_size: int, *splits) -> tuple[int, ...]:
    """The whole batches of each search split (weight, architecture); at least one each."""
    counts = [split_size(split) for split in splits]
    steps = tuple(count // batch_size for count in counts)
    if min(steps) < 1:
        raise DataError(
            f"batch_size {batch_size} is larger than a data split ({counts[0]} weight, "
            f"{counts[1]} architecture images); lower batch_size (--override=batch_size=N) "
            "or use more data"
        )
    return steps


def distributed_batches(split, strategy, batch_size: int, shuffle_seed: int | None, skip: int):
    """An iterator over the (distributed) batches of one pass over a search
    split, after ``skip`` batches: arrays through :func:`make_dataset`; a
    streamed ``SearchSplit`` read by each input pipeline for its own replicas."""
    if hasattr(split, "distribute"):
        return iter(split.distribute(strategy, batch_size, shuffle_seed, skip))
    dataset = make_dataset(*split, batch_size, shuffle_seed=shuffle_seed)
    if skip:
        dataset = dataset.skip(skip)
    return iter(strategy.experimental_distribute_dataset(dataset))


# --------------------------------------------------------------------------------------
# Augmentation, and the unaugmented view
# --------------------------------------------------------------------------------------


def random_crop_box(image, seed):
    """(begin, size) of a random-resized crop (GoogLeNet's: 8-100 % of the area,
    aspect 3/4-4/3), stateless by ``seed``; the whole image when no box fits."""
    import tensorflow as tf

    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def _augment_image(image, seed):
    """One float32 image [H, W, C] (static H, W, C), augmented with a stateless seed [2]."""
    import tensorflow as tf

    height, width, channels = image.shape
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if max(height, width) <= SMALL_IMAGE_SIDE:
        pad = max(2, min(height, width) // 8)
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, [height, width, channels], crop_seed)
    else:
        begin, size = random_crop_box(image, crop_seed)
        crop = tf.slice(image, begin, size)
        image = tf.image.resize(crop, (height, width), "bilinear")
        image = tf.ensure_shape(image, (height, width, channels))
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def augment_images(images, seed):
    """Random crop and horizontal flip of float32 images, deterministic given ``seed``.

    ``images`` is one image [H, W, C] or a batch [B, H, W, C] with static H, W and
    C; ``seed`` a stateless seed, an integer tensor of shape [2] (a batch derives
    one seed per image from it). Images whose longer side is at most
    ``SMALL_IMAGE_SIDE`` pixels are zero-padded by max(2, shorter side // 8)
    pixels on each side and randomly cropped back to their size (pad-and-crop);
    larger ones get a random resized crop (area 8%..100%, aspect ratio
    3/4..4/3, resized back bilinearly). Then a random horizontal flip. The
    output has the input's shape and dtype. Built of TensorFlow ops only, it
    runs eagerly and inside ``tf.data.Dataset.map`` or ``tf.function``.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if images.dtype != tf.float32:
        raise DataError(f"augment_images needs float32 images, got {images.dtype.name}")
    if images.shape.rank not in (3, 4) or not images.shape[-3:].is_fully_defined():
        raise DataError(
            f"augment_images needs images [H, W, C] or [B, H, W, C] with static H, W, C, "
            f"got shape {images.shape}"
        )
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if images.shape.rank == 3:
        return _augment_image(images, seed)
    seeds = tf.random.experimental.stateless_split(seed, tf.shape(images)[0])
    return tf.map_fn(
        lambda args: _augment_image(*args),
        (images, seeds),
        fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32),
    )


def _resize(image, size: tuple[int, int]):
    import tensorflow as tf

    return tf.image.resize(tf.cast(image, tf.float32), size, "bilinear")


def unaugmented(images, size: tuple[int, int]):
    """Decoded uint8 images ([h, w, C] or a batch) of any size as float32 [size, C]
    in 0..255, as the model sees them unaugmented: large targets (a side over
    ``SMALL_IMAGE_SIDE``) are centre-cropped (``EVAL_CROP_FRACTION``) and
    resized, small ones resized (bilinear)."""
    import tensorflow as tf

    if max(size) > SMALL_IMAGE_SIDE:
        images = tf.image.central_crop(images, EVAL_CROP_FRACTION)
    return _resize(images, size)


def _prepare(image, example_id, size, channels, seed, augment: bool):
    """A decoded uint8 image [h, w, C] of any size as float32 [H, W, C] in 0..255.

    Augmented (``seed`` a stateless seed [2], folded with the example id): large
    targets get a random resized crop of the original image (area 8-100 %,
    aspect 3/4-4/3) and a flip, small ones the resize then ``augment_images``'s
    pad-and-crop and flip. Not augmented: ``unaugmented``.
    """
    import tensorflow as tf

    height, width = size
    if not augment:
        return tf.ensure_shape(unaugmented(image, size), (height, width, channels))
    image_seed = tf.random.experimental.stateless_fold_in(seed, example_id)
    if max(height, width) > SMALL_IMAGE_SIDE:
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(image_seed, 2))
        begin, extent = random_crop_box(image, crop_seed)
        out = _resize(tf.slice(image, begin, extent), size)
        out = tf.image.stateless_random_flip_left_right(out, flip_seed)
    else:
        out = _augment_image(
            tf.ensure_shape(_resize(image, size), (height, width, channels)), image_seed
        )
    return tf.ensure_shape(out, (height, width, channels))


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def unaugmented_arrays(images: np.ndarray, size: tuple[int, int], chunk: int = 1024) -> np.ndarray:
    """uint8 images [N, h, w, C] as ``unaugmented`` makes them, back to uint8, in chunks
    (the pixels the pipeline yields for them, rounded)."""
    if images.shape[1:3] == tuple(size) and max(size) <= SMALL_IMAGE_SIDE:
        return images  # a resize to the same size changes no pixel
    out = np.empty((len(images), *size, images.shape[3]), np.uint8)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = _to_uint8(
            unaugmented(images[start : start + chunk], size).numpy()
        )
    return out


# --------------------------------------------------------------------------------------
# Statistics and the training / evaluation pipelines of arrays
# --------------------------------------------------------------------------------------


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, standard deviation) of uint8 images [N, H, W, C], in pixel units.

    Both are float32 arrays [C] in 0..255, summed in float64 over chunks of
    images, so large datasets need no float copy of the whole array.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(
            "channel_stats needs a uint8 numpy array [N, H, W, C], got "
            f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}"
        )
    if images.size == 0:
        raise DataError("channel_stats: no pixels (empty image array)")
    channels = images.shape[-1]
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].reshape(-1, channels).astype(np.float64)
        total += x.sum(axis=0)
        total_sq += np.square(x).sum(axis=0)
    count = images.size // channels
    mean = total / count
    variance = np.maximum(total_sq / count - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(variance).astype(np.float32)


def _check_pipeline_arrays(images, labels, batch_size) -> None:
    check_images_and_labels(images, labels, "pipeline")
    positive_int(batch_size, "batch_size", "pass the number of images per batch")


def train_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool = True,
    epoch: int = 0,
):
    """The training tf.data pipeline of one epoch: (float32 pixels 0..255, int32 labels).

    The uint8 images [N, H, W, C] are shuffled in an order fixed by (seed,
    epoch), augmented by ``augment_images`` with a seed derived from (seed,
    epoch, image index) when ``augment``, batched without the last partial
    batch, and prefetched. The pixels are not normalised (the model does that).
    The same arguments give the same batches.
    """
    import tensorflow as tf

    _check_pipeline_arrays(images, labels, batch_size)
    non_negative_int(seed, "seed")
    non_negative_int(epoch, "epoch")
    if batch_size > len(images):
        raise DataError(
            f"batch_size {batch_size} exceeds the {len(images)} training images; "
            "lower batch_size (the last partial batch is dropped)"
        )
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(images))
    images_t = tf.convert_to_tensor(images)
    labels_t = tf.convert_to_tensor(labels)
    epoch_seed = tf.constant([int(seed), int(epoch)], tf.int64)

    def load(index):
        image = tf.cast(tf.gather(images_t, index), tf.float32)
        if augment:
            image_seed = tf.random.experimental.stateless_fold_in(epoch_seed, index)
            image = augment_images(image, image_seed)
        return image, tf.gather(labels_t, index)

    dataset = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """The evaluation tf.data pipeline: (float32 pixels 0..255, int32 labels) batches.

    In the arrays' order, not augmented, with the last partial batch kept,
    prefetched. The pixels are not normalised (the model does that).
    """
    import tensorflow as tf

    _check_pipeline_arrays(images, labels, batch_size)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------
# Sharding under a strategy
# --------------------------------------------------------------------------------------


def shard_share(context) -> tuple[int, int]:
    """(number of input pipelines, this pipeline's index) of a tf.distribute.InputContext."""
    if context is None:
        return 1, 0
    return int(context.num_input_pipelines), int(context.input_pipeline_id)


def replicas_per_pipeline(input_context) -> int:
    """How many replicas one input pipeline feeds (1 without a context): a
    global step takes that many per-replica batches from it."""
    if input_context is None:
        return 1
    return max(1, input_context.num_replicas_in_sync // input_context.num_input_pipelines)


def listed_share(
    positions: np.ndarray, shuffle_seed: int | None, context, whole: int
) -> np.ndarray:
    """The positions this pipeline reads of a source read by example (files, array rows).

    Permuted by the seed; ``whole`` > 0 trims the permuted list to a multiple of
    it first, so every pipeline gets the same number of examples (one per global
    batch slot); then every ``count``-th from the pipeline's index, so each
    example lands in exactly one share."""
    order = np.asarray(positions, np.int64)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(order)
    if whole:
        order = order[: len(order) - len(order) % whole]
    count, index = shard_share(context)
    return order[index::count]


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


# --------------------------------------------------------------------------------------
# The streamed dataset
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class StreamingData:
    """A dataset read from its source as it is used; see the module docstring.

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
        ``train_pipeline`` for arrays: last partial batch dropped."""
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

    def arrays(
        self, split: Split, batch_size: int = 256, limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images, int32 labels) of a split (its first ``limit`` only, when given),
        unaugmented (``unaugmented``), in reading order: what the pipeline yields,
        rounded. A reader that holds its pixels in arrays gives them directly."""
        reader = split.reader
        if limit is None and hasattr(reader, "arrays"):
            images, labels = reader.arrays(split._positions())
            return unaugmented_arrays(images, self.input_shape[:2]), labels
        steps = None if limit is None else -(-limit // batch_size)
        images, labels = [], []
        with named_data_errors():
            for x, y in self.images(split, batch_size, drop_remainder=False, steps=steps):
                images.append(_to_uint8(x.numpy()))
                labels.append(y.numpy().astype(np.int32))
        if not images:
            return np.zeros((0, *self.input_shape), np.uint8), np.zeros(0, np.int32)
        return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]

    # ----- statistics ------------------------------------------------------------------
    def channel_stats(
        self, limit: int | None = None, log: Callable[[str], None] = lambda line: None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (mean, std) of the training images as the model sees them
        (resized, not augmented), in pixel units, streamed and cached as JSON.

        ``limit`` reads an evenly spaced subset of that many images instead of all.
        """
        key = {**self.description, "statistics_of": "train", "limit": limit}
        stats = cached(self.cache_dir, "channel_stats", key, lambda: self._stream_stats(limit, log))
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
