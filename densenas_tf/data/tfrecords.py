"""TFRecord shards: the reader (``open_records``) and the writer (``write_tfrecords``).

One directory holds the shards of one or more splits (``train-<generation>-00000-of-00008.tfrecord``
...; the generation is a random tag per write) and a ``dataset.json`` describing them
(format ``densenas_tf.tfrecords``, version 1): class names, image size (when the
images were resized on writing), channels, and per split its shards with their
record counts and every record's label. Records carry the encoded image, its
label and its index (its position in the split), so that the reader selects
classes and draws splits from the description alone, without reading a record,
and divides a split exactly among input pipelines by shard
(``pipelines.exact_share``). The writer takes an image folder or a prepared tfds
dataset; examples are written in an order shuffled by seed, so every shard
mixes the classes.

A write replaces one split atomically: the new shards are written into a
staging folder in the directory, moved in beside the old ones (their names
carry a new generation), then ``dataset.json`` is replaced by a rename, and
only then are the old shards deleted. Interrupted at any point, the directory
reads as either the old split or the new one, complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.files import write_text_atomic
from densenas_tf.core.runtime import Progress
from densenas_tf.data.image_folder import _probe_image, list_image_folder
from densenas_tf.data.pipelines import exact_share, shard_share
from densenas_tf.data.prepared_tfds import tfds_builder
from densenas_tf.data.stream import (
    DEFAULT_CACHE_DIR,
    DataError,
    Source,
    Split,
    channels_of_shape,
    decode_named,
    read_class_list,
    select_classes,
)

# The description file that tools/write_tfrecords.py writes beside its shards.
TFRECORD_DESCRIPTION = "dataset.json"
TFRECORD_FORMAT = "densenas_tf.tfrecords"
TFRECORD_VERSION = 1
# The splits a directory may hold.
SPLITS = ("train", "test")
# The feature keys of one record.
IMAGE_KEY, LABEL_KEY, INDEX_KEY = "image/encoded", "image/class/label", "image/index"
# How to mend a record the pipeline cannot decode.
RECORD_FIX = (
    "write the shards again with tools/write_tfrecords.py from a source without the damaged image"
)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


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


def _membership(positions: np.ndarray, size: int):
    """A bool tensor [size]: True at positions (None when all are kept)."""
    import tensorflow as tf

    if len(positions) == size:
        return None
    mask = np.zeros(size, bool)
    mask[positions] = True
    return tf.constant(mask)


class RecordReader:
    """TFRecord shards written by ``write_tfrecords``: each input pipeline reads an
    exact, equal share of the records (see ``pipelines.exact_share``), files
    interleaved, records shuffled in a buffer."""

    indexed = True

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
        """(encoded image, label, record index) of the positions (None: all), this
        pipeline's share."""
        import tensorflow as tf

        if positions is None:
            positions = np.flatnonzero(self.labels >= 0)
        count, index = shard_share(context)
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
        return decode_named(encoded, self.channels, where, RECORD_FIX)


def open_records(
    directory: str | os.PathLike,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Source:
    """TFRecord shards and their ``dataset.json``: its splits, "test" the test split.

    Images written at their own sizes need image_size. Channel statistics are
    cached in the directory itself when it is writable (and no cache_dir given).
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
    image_size = image_size or description.get("image_size")
    if image_size is None:
        raise DataError(f"{directory}: the images were written at their own sizes; pass image_size")
    channels = int(description["channels"])

    def whole(split: str) -> Split:
        shards = splits[split]["shards"]
        reader = RecordReader(
            [str(directory / s["file"]) for s in shards],
            [int(s["count"]) for s in shards],
            np.asarray(splits[split]["labels"], np.int32),
            remap,
            channels,
            f"{directory} ({split} split)",
        )
        return Split.whole(reader)

    writable = os.access(directory, os.W_OK)
    return Source(
        name=description.get("name") or directory.resolve().name,
        class_names=kept,
        input_shape=(int(image_size), int(image_size), channels),
        splits={split: whole(split) for split in splits if split in SPLITS},
        test_split="test" if "test" in splits else None,
        description={
            "kind": "tfrecord",
            "directory": str(directory.resolve()),
            "classes": list(kept),
            "image_size": image_size,
            "channels": channels,
            "records": {k: len(v["labels"]) for k, v in splits.items()},
        },
        # A given cache directory first; else beside the shards where that is writable.
        cache_dir=Path(cache_dir).expanduser()
        if cache_dir
        else (directory if writable else Path(DEFAULT_CACHE_DIR).expanduser()),
    )


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _example(encoded: bytes, label: int, index: int) -> bytes:
    import tensorflow as tf

    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        INDEX_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _reencode(encoded: bytes, image_size: int, channels: int, where: str) -> bytes:
    """The image decoded, resized to image_size x image_size (bilinear) and re-encoded
    (PNG for gray images, JPEG quality 95 for colour ones)."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as err:
        raise DataError(f"{where}: not a readable image ({err.message.strip()})") from err
    resized = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), "bilinear")
    pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    if channels == 1:
        return tf.io.encode_png(pixels).numpy()
    return tf.io.encode_jpeg(pixels, quality=95).numpy()


def _folder_examples(root: Path, class_list) -> tuple[tuple[str, ...], list, int]:
    names, files = list_image_folder(root)
    wanted = read_class_list(class_list) if class_list else None
    kept, remap = select_classes(tuple(names), wanted, f"the image folder {root}")
    examples = [
        (path, int(remap[old]))
        for old, found in enumerate(files)
        if remap[old] >= 0
        for path in found
    ]
    if not examples:
        raise DataError(f"{root}: no images in the selected classes")
    channels = channels_of_shape(_probe_image(examples[0][0]).shape)
    return kept, examples, channels


def _tfds_examples(name: str, data_dir, split: str, class_list):
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    info = builder.info
    if split not in info.splits:
        raise DataError(
            f"tensorflow-datasets {name!r} has no split {split!r} (splits: {list(info.splits)})"
        )
    image_key, label_key = info.supervised_keys
    names = tuple(info.features[label_key].names)
    wanted = read_class_list(class_list) if class_list else None
    kept, remap = select_classes(names, wanted, f"tensorflow-datasets {name!r}")
    channels = channels_of_shape(tuple(info.features[image_key].shape))
    dataset = builder.as_dataset(
        split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()}
    )
    count = int(info.splits[split].num_examples)
    return kept, remap, channels, dataset, image_key, label_key, count


def write_tfrecords(
    out_dir: str | os.PathLike,
    split: str = "train",
    image_folder: str | os.PathLike | None = None,
    tfds_name: str | None = None,
    tfds_data_dir: str | os.PathLike | None = None,
    tfds_split: str | None = None,
    class_list: str | os.PathLike | None = None,
    image_size: int | None = None,
    records_per_shard: int = 1024,
    seed: int = 0,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Writes ``split``'s shards into out_dir from one source; returns the description.

    ``image_size`` resizes (and re-encodes) every image on writing, which
    makes reading cheaper; without it the encoded files are copied as they are.
    An existing description in out_dir keeps its other splits (their classes
    must be the same); this split's old shards are replaced atomically (see the
    module docstring): a write that fails or is interrupted leaves them readable.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if bool(image_folder) == bool(tfds_name):
        raise DataError("pass exactly one source: image_folder or tfds_name")
    if records_per_shard < 1:
        raise DataError(f"records_per_shard must be positive, got {records_per_shard}")
    out_dir = Path(out_dir)
    if tfds_name:
        kept, remap, channels, dataset, image_key, label_key, count = _tfds_examples(
            tfds_name, tfds_data_dir, tfds_split or split, class_list
        )
        source = {"tfds_name": tfds_name, "tfds_split": tfds_split or split}
        items = _tfds_items(dataset, image_key, label_key, remap)
        # tfds's own shards are already shuffled; the order is kept.
        order = None
    else:
        root = Path(image_folder)
        kept, examples, channels = _folder_examples(root, class_list)
        source = {"image_folder": str(root.resolve())}
        count = len(examples)
        order = np.random.default_rng(seed).permutation(count)
        items = ((p.read_bytes(), label, str(p)) for p, label in (examples[i] for i in order))
    _existing_description(out_dir, kept, channels, image_size)  # refused before any work
    generation = secrets.token_hex(4)
    staging = out_dir / f".{split}-staging-{generation}"
    moved: list[Path] = []
    try:
        shards, labels = _write_shards(
            staging, split, generation, items, count, records_per_shard, image_size, channels, log
        )
        # The new shards move in beside the old ones under names of their own; the
        # description's atomic rename is the switch from the old split to the new.
        for entry in shards:
            os.replace(staging / entry["file"], out_dir / entry["file"])
            moved.append(out_dir / entry["file"])
        description = _existing_description(out_dir, kept, channels, image_size)
        description["splits"][split] = {"shards": shards, "labels": labels, "source": source}
        write_text_atomic(out_dir / TFRECORD_DESCRIPTION, json.dumps(description) + "\n")
    except BaseException:
        # Not switched: the new shards moved in so far go (unless the description
        # already names them); the old split stays as it was.
        listed = _listed_shards(out_dir)
        for path in moved:
            if path.name not in listed:
                path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_unlisted(out_dir, split, {entry["file"] for entry in shards})
    log(f"wrote {len(labels)} {split} records in {len(shards)} shards to {out_dir}")
    return description


def _listed_shards(out_dir: Path) -> set[str]:
    """The shard files the description in out_dir names (none when it is unreadable)."""
    try:
        description = json.loads((out_dir / TFRECORD_DESCRIPTION).read_text())
        return {s["file"] for split in description["splits"].values() for s in split["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _remove_unlisted(out_dir: Path, split: str, listed: set[str]) -> None:
    """Deletes the split's shards that the description no longer names (the old
    ones, and any left by an interrupted write) and stale staging folders."""
    for path in out_dir.glob(f"{split}-*.tfrecord"):
        if path.name not in listed:
            path.unlink(missing_ok=True)
    for path in out_dir.glob(f".{split}-staging-*"):
        shutil.rmtree(path, ignore_errors=True)


def _tfds_items(dataset, image_key, label_key, remap) -> Iterator[tuple[bytes, int, str]]:
    for example in dataset.prefetch(64).as_numpy_iterator():
        label = int(remap[int(example[label_key])])
        if label >= 0:
            yield example[image_key], label, f"tfds example {label_key}={example[label_key]}"


def _existing_description(out_dir: Path, kept, channels: int, image_size) -> dict[str, Any]:
    path = out_dir / TFRECORD_DESCRIPTION
    fresh = {
        "format": TFRECORD_FORMAT,
        "version": TFRECORD_VERSION,
        "name": out_dir.resolve().name,
        "class_names": list(kept),
        "channels": channels,
        "image_size": image_size,
        "splits": {},
    }
    if not path.is_file():
        return fresh
    old = json.loads(path.read_text())
    for key in ("class_names", "channels", "image_size"):
        if old.get(key) != fresh[key]:
            raise DataError(
                f"{path}: the split(s) there have {key} {old.get(key)!r}, this one "
                f"{fresh[key]!r}; write into another directory or with the same settings"
            )
    return old


def _write_shards(
    staging: Path, split, generation, items, count, records_per_shard, image_size, channels, log
):
    """Writes the items in shards into the (new) staging folder; returns
    (shard entries, every record's label). The shard names carry the write's
    generation, so they never clash with the shards already in place."""
    import tensorflow as tf

    staging.mkdir(parents=True)
    num_shards = max(1, -(-count // records_per_shard))
    progress = Progress(f"writing {split} shards", num_shards)
    shards, labels, start = [], [], time.time()
    items = iter(items)
    for shard in range(num_shards):
        name = f"{split}-{generation}-{shard:05d}-of-{num_shards:05d}.tfrecord"
        written = 0
        with tf.io.TFRecordWriter(str(staging / name)) as writer:
            for encoded, label, where in items:
                if image_size:
                    encoded = _reencode(encoded, image_size, channels, where)
                writer.write(_example(encoded, label, len(labels)))
                labels.append(label)
                written += 1
                if written == records_per_shard:
                    break
        if written == 0:
            (staging / name).unlink()
            break
        shards.append({"file": name, "count": written})
        progress.update({"images/s": len(labels) / max(time.time() - start, 1e-9)})
    if len(shards) != num_shards:  # a class filter left fewer examples than the split had
        renamed = []
        for k, entry in enumerate(shards):
            name = f"{split}-{generation}-{k:05d}-of-{len(shards):05d}.tfrecord"
            os.replace(staging / entry["file"], staging / name)
            renamed.append({"file": name, "count": entry["count"]})
        shards = renamed
    if not labels:
        raise DataError(f"no {split} examples to write (is the class list right?)")
    return shards, labels
