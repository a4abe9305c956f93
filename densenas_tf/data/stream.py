"""The objects every format gives, and the errors of reading them.

A format module (``idx``, ``image_folder``, ``prepared_tfds``, ``tfrecords``)
opens its source as a ``Source``: its named splits, each a ``Split`` of one
*reader*. A reader knows its examples by an index (array rows, file paths,
record numbers or tfds ids, with their labels) that is cheap to build, and
reads their pixels only inside tf.data pipelines. Every reader has:

* ``labels``: int32 [examples], -1 for an example of a class not selected;
* ``indexed``: whether ``labels`` is known without a pass over the source;
* ``records(positions, shuffle_seed, context, whole)``: a dataset of
  (encoded image, label, example id) of the positions (None: every selected
  example), shuffled by seed, this input pipeline's share of them;
* ``decode(encoded, example_id)``: the uint8 image [h, w, C] of one record.

``pipelines.StreamingData`` puts a train and a test ``Split`` together with
the pipelines that read them; ``ImageData`` holds a dataset's pixels in memory
(``sources.load_image_data`` fills it from a stream). The errors a pipeline
meets while reading (an undecodable image, an image of another size) carry a
one-line message that ``data_error`` turns back into a ``DataError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.core.errors import DenseNASError
from densenas_tf.core.files import write_text_atomic

# Where channel statistics and tfds label indexes are cached when the data's own
# directory is not the place (an image folder, a tfds data directory).
DEFAULT_CACHE_DIR = Path(os.environ.get("DENSENAS_CACHE_DIR", "~/.cache/densenas_tf"))


class DataError(DenseNASError, ValueError):
    """Data that is missing or malformed; the message says what and how to fix it."""


def positive_int(value, what: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DataError(f"{what} must be a positive integer, got {value!r}; {fix}")
    return int(value)


def non_negative_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise DataError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def channels_of_shape(shape) -> int:
    """1 for a gray image shape ([H, W], [H, W, 1|2]), else 3 (alpha is dropped)."""
    return 1 if len(shape) == 2 or (shape[-1] or 3) <= 2 else 3


# --------------------------------------------------------------------------------------
# Datasets held in memory
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """A classification dataset held in memory.

    Images are uint8 arrays [N, H, W, C] (C is 1 for grayscale, 3 for colour),
    labels int32 arrays [N] holding indices into ``class_names``. Train and test
    images share their H, W and C. The arrays are checked on construction;
    instances compare by identity (``eq=False``), as arrays have no single truth
    value.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self):
        if not self.class_names:
            raise DataError(f"{self.name}: no class names")
        check_class_count(self.class_names, f"the data {self.name!r}")
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            check_images_and_labels(images, labels, f"{self.name} {split}")
            if labels.size and not 0 <= labels.min() <= labels.max() < self.num_classes:
                raise DataError(
                    f"{self.name} {split}: labels span {labels.min()}..{labels.max()}, "
                    f"outside 0..{self.num_classes - 1} of the {self.num_classes} classes"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {self.train_images.shape[1:]} but test images "
                f"are {self.test_images.shape[1:]}; pass image_size to give them one size"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(d) for d in self.train_images.shape[1:])


def source_label(description: Mapping[str, Any], name: str) -> str:
    """How a one-line error names a source: its kind and where it is."""
    kind = description.get("kind")
    if kind == "image_folder":
        return f"the image folder {description.get('root', name)}"
    if kind == "tfrecord":
        return f"the TFRecords in {description.get('directory', name)}"
    if kind == "tfds":
        return f"the tfds dataset {description.get('tfds', name)}"
    return f"the data {name!r}"


def check_class_count(
    class_names: Sequence[str], where: str, labels: np.ndarray | None = None
) -> None:
    """Refuses data of fewer than two classes (by their names, or, when the
    labels are known, by the classes the labels use): a classifier of one class
    reaches 100 % accuracy at zero loss and learns nothing."""
    fix = (
        "a classifier needs at least two classes: add another class (for an image "
        "folder, another sub-folder of images) or pick a source with more"
    )
    if len(class_names) < 2:
        listed = f" ({class_names[0]!r})" if class_names else ""
        raise DataError(f"{where} holds {len(class_names)} class{listed}; {fix}")
    if labels is not None and labels.size:
        used = np.unique(labels)
        if len(used) < 2:
            raise DataError(
                f"{where} holds images of one class only ({class_names[int(used[0])]!r} "
                f"of {len(class_names)} named); {fix}"
            )


def check_images_and_labels(images, labels, what: str) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(
            f"{what}: images must be a uint8 numpy array [N, H, W, C], got "
            f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}"
        )
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 1:
        raise DataError(
            f"{what}: labels must be an int32 numpy array [N], got "
            f"{getattr(labels, 'dtype', type(labels))} {getattr(labels, 'shape', '')}"
        )
    if len(images) != len(labels):
        raise DataError(f"{what}: {len(images)} images but {len(labels)} labels")


# --------------------------------------------------------------------------------------
# Splits and sources
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Some examples of one reader, by position in its index (None: all of them)."""

    reader: Any
    positions: np.ndarray | None
    size: int

    @classmethod
    def whole(cls, reader) -> Split:
        """Every selected example of an indexed reader."""
        positions = np.flatnonzero(reader.labels >= 0)
        return cls(reader, positions, len(positions))

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
        return self.reader.records(self.positions, shuffle_seed, context, whole)


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """A source as its format module opens it: every named split whole.

    ``test_split`` names the split that is the test part (None: a part of
    "train" is held out, see ``sources``); ``description`` identifies the
    source for the caches (the division adds its test fraction and seed);
    ``cache_dir`` is where channel statistics go.
    """

    name: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    splits: Mapping[str, Split]
    test_split: str | None
    description: Mapping[str, Any]
    cache_dir: Path


def cached(cache_dir: Path, kind: str, key: Mapping[str, Any], make) -> dict[str, Any]:
    """The JSON cached for ``key`` in cache_dir (written atomically by make() on a miss)."""

    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"{kind}_{digest}.json"
    if path.is_file():
        entry = json.loads(path.read_text())
        if entry.get("key") == json.loads(text):
            return entry["value"]
    value = make()
    try:
        write_text_atomic(path, json.dumps({"key": json.loads(text), "value": value}) + "\n")
    except OSError:
        pass  # a read-only cache only costs the recomputation next time
    return value


# --------------------------------------------------------------------------------------
# Class lists, on names only
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


# --------------------------------------------------------------------------------------
# Decoding inside a pipeline, with errors that name the image
# --------------------------------------------------------------------------------------

# The first bytes of the image formats the pipelines decode (JPEG, PNG, GIF, BMP).
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
# What a pipeline's error says when an image cannot be decoded (``data_error`` finds it).
UNREADABLE = "not a readable image"
# What it says of an image whose size differs from the first one's.
OTHER_SIZE = " pixels but "
SIZE_FIX = "pass image_size to resize all images to one size"
# The one-line messages the pipelines' assertions carry.
_NAMED_FAILURES = (f": {UNREADABLE} (", ": not an image (", OTHER_SIZE)


def read_checked(path, label, example_id):
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


def decode_named(encoded, channels: int, where, fix: str):
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


def sized_as_first(image, first: tuple[str, tuple[int, int]] | None, where):
    """The image, when it has the size of the source's first image (``first``:
    (its name, (height, width)), None to take any size); else the pipeline stops
    with an error naming both. Sources opened without image_size are strict."""
    import tensorflow as tf

    if first is None:
        return image
    name, (height, width) = first
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    message = tf.strings.join(
        [
            where,
            " is ",
            tf.strings.as_string(shape[0]),
            "x",
            tf.strings.as_string(shape[1]),
            f"{OTHER_SIZE}{name} is {height}x{width}; {SIZE_FIX}",
        ]
    )
    with tf.control_dependencies([tf.debugging.Assert(same, [message])]):
        return tf.identity(image)


def data_error(err: BaseException) -> DataError | None:
    """The one-line DataError behind a pipeline's tf.errors.InvalidArgumentError
    when it is a named data failure (an unreadable image, one of another size);
    else None."""
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
