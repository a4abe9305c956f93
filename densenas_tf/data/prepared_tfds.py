"""tensorflow-datasets datasets already prepared on disk; nothing is ever downloaded.

``open_prepared`` opens every split of an image classification dataset as a
``stream.Source`` whose readers read with ``builder.as_dataset``, images left
encoded until the pipeline decodes them. A split's label index (its examples'
ids and labels, for class lists and divisions) is built on demand by one pass
that skips the images, and cached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.runtime import Progress
from densenas_tf.data.pipelines import exact_share, shard_share
from densenas_tf.data.stream import (
    DEFAULT_CACHE_DIR,
    DataError,
    Source,
    Split,
    cached,
    channels_of_shape,
    read_class_list,
    select_classes,
    sized_as_first,
)

# The splits that are a dataset's test part, in order of preference.
TEST_SPLITS = ("test", "validation")


def tfds_builder(name: str, data_dir: str | os.PathLike | None):
    """The builder of an image classification tfds dataset prepared in data_dir
    (supervised (image, label) keys and a train split); never downloads."""
    import tensorflow_datasets as tfds

    if ":" in name:
        raise DataError(
            f"tfds_name {name!r}: community datasets (namespace:name) need the network; "
            "pass the name of a dataset registered with tensorflow-datasets"
        )
    kwargs = {} if data_dir is None else {"data_dir": os.fspath(data_dir)}
    try:
        builder = tfds.builder(name, **kwargs)
    except tfds.core.DatasetNotFoundError as err:
        raise DataError(
            f"unknown tensorflow-datasets name {name!r}; tfds.list_builders() lists the "
            "known names (a version or config goes after a slash: 'name/config:1.0.0')"
        ) from err
    except ValueError as err:
        raise DataError(f"tensorflow-datasets {name!r}: {err}") from err
    if not builder.is_prepared():
        raise DataError(
            f"tensorflow-datasets {name!r} is not prepared in {builder.data_dir}, and nothing "
            f"is downloaded here; on a machine with network access run 'tfds build {name} "
            "--data_dir=DIR' (ImageNet: put the archives in DIR/downloads/manual first), copy "
            "DIR here and pass it as tfds_data_dir"
        )
    info = builder.info
    if not info.supervised_keys or len(info.supervised_keys) != 2:
        raise DataError(
            f"tensorflow-datasets {name!r} has no (image, label) supervised structure "
            f"(supervised_keys {info.supervised_keys}); use an image classification dataset"
        )
    if "train" not in info.splits:
        raise DataError(
            f"tensorflow-datasets {name!r} has no 'train' split (splits: {list(info.splits)})"
        )
    return builder


class TfdsReader:
    """A prepared tfds split read with ``builder.as_dataset``; its label index is
    built (and cached) on demand. ``first`` (an example's id and its (height,
    width)) makes every image decoded be checked to have that size."""

    indexed = False

    def __init__(self, builder, split: str, remap, channels: int, cache_dir: Path, first=None):
        self.builder, self.split, self.remap, self.channels = builder, split, remap, channels
        self.image_key, self.label_key = builder.info.supervised_keys
        self.cache_dir, self.first = cache_dir, first
        self._index = None

    def description(self) -> dict[str, Any]:
        info = self.builder.info
        return {
            "tfds": info.full_name,
            "data_dir": str(self.builder.data_dir),
            "split": self.split,
            "examples": int(info.splits[self.split].num_examples),
        }

    def _read(self, split: str, shuffle_seed):
        import tensorflow_datasets as tfds

        read_config = tfds.ReadConfig(
            add_tfds_id=True, shuffle_seed=shuffle_seed, try_autocache=False
        )
        return self.builder.as_dataset(
            split=split,
            shuffle_files=shuffle_seed is not None,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )

    @property
    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """(tfds ids, labels as the dataset numbers them) of the split, in file order."""
        if self._index is None:
            self._index = cached(self.cache_dir, "tfds_index", self.description(), self._scan)
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
        """((encoded image, tfds id), label, example id) of this pipeline's share of
        the positions.

        One pipeline reading a whole split reads it as it is (no index needed).
        Otherwise the split's index (built once, cached) gives every example's
        position, and ``exact_share`` divides them by the split's shard sizes
        exactly as for TFRecords: each pipeline reads only the slices of the
        shards its run touches (``train[a:b]+...``) and keeps its own examples.
        """
        import tensorflow as tf

        count, index = shard_share(context)
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
        dataset = dataset.map(lambda e, label, uid, key: ((e, key), label, uid))
        if shuffle_seed is not None and (mine is None or len(mine)):  # shuffle(0) is an error
            size = 10_000 if mine is None else min(len(mine), 10_000)
            dataset = dataset.shuffle(size, seed=shuffle_seed, reshuffle_each_iteration=False)
        return dataset

    def decode(self, encoded, example_id):
        import tensorflow as tf

        encoded, key = encoded
        image = self.builder.info.features[self.image_key].decode_example(encoded)
        if image.shape.rank == 2:
            image = image[..., None]
        have = image.shape[-1]
        if have in (2, 4):
            image = image[..., :-1]
            have -= 1
        if have != self.channels and have is not None:
            image = (
                tf.image.grayscale_to_rgb(image)
                if self.channels == 3
                else tf.image.rgb_to_grayscale(image)
            )
        if self.first is None:
            return image
        where = tf.strings.join([f"tensorflow-datasets {self.builder.info.name} example ", key])
        return sized_as_first(image, self.first, where)


def _first_example(builder, image_key: str) -> tuple[str, tuple[int, int]]:
    """(name, (height, width)) of the train split's first image, in file order."""
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(
        split="train[:1]", shuffle_files=False, read_config=tfds.ReadConfig(add_tfds_id=True)
    )
    for example in dataset.take(1):
        shape = example[image_key].shape
        key = example["tfds_id"].numpy().decode()
        return f"tensorflow-datasets {builder.info.name} example {key}", (shape[0], shape[1])
    raise DataError(f"tensorflow-datasets {builder.info.name}: the train split is empty")


def open_prepared(
    name: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Source:
    """A prepared tfds dataset: its splits, its test split "test" (else "validation").

    Without image_size, the images take the size the dataset declares, else
    (images of their own sizes) the first training image's, which every image
    must then have. A class list needs each split's labels: they are read once
    without decoding images and cached.
    """
    builder = tfds_builder(name, data_dir)
    info = builder.info
    image_key, label_key = info.supervised_keys
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    shape = tuple(image_feature.shape)
    if getattr(image_feature, "dtype", None) != np.uint8 or len(shape) not in (2, 3):
        raise DataError(
            f"tensorflow-datasets {name!r}: inputs are {getattr(image_feature, 'dtype', '?')} "
            f"{shape}, not uint8 images [H, W(, C)]; use an image dataset"
        )
    label_dtype = np.dtype(getattr(label_feature, "np_dtype", np.float32))
    if not np.issubdtype(label_dtype, np.integer) or tuple(label_feature.shape) != ():
        raise DataError(
            f"tensorflow-datasets {name!r}: labels are {label_dtype} {label_feature.shape}, "
            "not integer class indices"
        )
    channels = channels_of_shape(shape)
    cache = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    test_name = next((s for s in TEST_SPLITS if s in info.splits), None)
    names = tuple(getattr(label_feature, "names", None) or ())
    if not names:  # numbered classes, as many as the largest label says (one label scan)
        scans = [
            TfdsReader(builder, s, None, channels, cache).index[1]
            for s in ("train", test_name)
            if s
        ]
        names = tuple(
            str(i) for i in range(1 + max(int(labels.max(initial=0)) for labels in scans))
        )
    wanted = read_class_list(class_list) if class_list else None
    kept, remap = select_classes(names, wanted, f"tensorflow-datasets {name!r}")
    first = None
    if image_size is not None:
        size = (image_size, image_size)
    elif shape[0] is not None and shape[1] is not None:
        size = (int(shape[0]), int(shape[1]))
    else:
        first = _first_example(builder, image_key)
        size = tuple(int(d) for d in first[1])

    def whole(split: str) -> Split:
        reader = TfdsReader(builder, split, remap, channels, cache, first)
        if wanted is None:
            return Split(reader, None, int(info.splits[split].num_examples))
        positions = np.flatnonzero(reader.labels >= 0)
        return Split(reader, positions, len(positions))

    splits = {split: whole(split) for split in ("train", test_name) if split}
    return Source(
        name=info.name,
        class_names=kept,
        input_shape=(*size, channels),
        splits=splits,
        test_split=test_name,
        description={
            "kind": "tfds",
            "tfds": info.full_name,
            "data_dir": str(builder.data_dir),
            "classes": list(kept),
            "image_size": size[0] if size[0] == size[1] else list(size),
            "channels": channels,
            "test_split": test_name,
        },
        cache_dir=cache,
    )
