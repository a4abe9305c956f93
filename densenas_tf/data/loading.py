"""Data, offline: image datasets held in memory, deterministic splits, tf.data.

Fashion-MNIST is read from the four IDX files that Debian's
``dataset-fashion-mnist`` installs in /usr/share/datasets/fashion-mnist (or
any directory holding the same files, gzipped or not). Nothing is downloaded.

``load_image_data`` reads one of three sources into an ``ImageData`` of uint8
arrays: Fashion-MNIST's IDX files, a tensorflow-datasets dataset already
prepared on disk, or a folder holding one sub-folder of images per class. The
whole dataset is held in memory, so it must fit there.

Two families of tf.data pipelines follow: ``make_dataset`` (normalised with the
Fashion-MNIST statistics, for the architecture search) and ``train_pipeline`` /
``eval_pipeline`` (float32 pixels in 0..255, for training a found architecture
whose model carries its own normalisation), with deterministic, seeded
augmentation (``augment_images``).

Datasets too large for memory (ImageNet) stream from disk instead:
``densenas_tf.data.streaming`` (image folders, TFRecords, prepared tfds datasets),
whose pipelines yield what these yield.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from densenas_tf.core.errors import DenseNASError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
# Mean and standard deviation of the Fashion-MNIST training pixels (scaled to [0, 1]).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
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
# Built-in datasets that ``load_image_data(dataset=...)`` reads without tfds or a folder.
DATASETS = ("fashion_mnist",)
# File suffixes (lower case) that the image-folder source reads.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Images whose longer side is at most this many pixels get pad-and-crop augmentation;
# larger ones get a random resized crop.
SMALL_IMAGE_SIDE = 64
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


class DataError(DenseNASError, ValueError):
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


# --------------------------------------------------------------------------------------
# Image datasets held in memory
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
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            _check_images_and_labels(images, labels, f"{self.name} {split}")
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


def _check_images_and_labels(images, labels, what: str) -> None:
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


def _positive_int(value, what: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DataError(f"{what} must be a positive integer, got {value!r}; {fix}")
    return int(value)


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
      is downloaded; its "train" and "test" splits are read (a dataset without a
      "test" split has its "train" split divided by ``test_fraction``).
    * ``image_folder``: ``image_folder/<class name>/*.{png,jpg,jpeg,bmp,gif}``,
      classes sorted by name, divided into train and test by ``test_fraction``.
      Images keep the channel count of the first image read (others are
      converted, grayscale <-> RGB; alpha channels are dropped).
    * else ``dataset``, one of ``DATASETS``: Fashion-MNIST from its IDX files in
      ``data_dir`` (default: Debian's directory).

    ``image_size`` resizes every image to image_size x image_size (bilinear, back
    to uint8); without it, all images must share one size. ``train_limit`` and
    ``test_limit`` keep the first N images of each split after a shuffle seeded
    by ``seed``, which also seeds the train/test division. The whole dataset is
    held in memory as uint8 arrays, so it must fit there.
    """
    if image_size is not None:
        image_size = _positive_int(image_size, "image_size", "pass the side in pixels, or None")
    for what, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None:
            _positive_int(limit, what, "pass a number of images, or None for all")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if tfds_name and image_folder:
        raise DataError(
            f"both tfds_name={tfds_name!r} and image_folder={str(image_folder)!r} given; "
            "pass only one data source"
        )
    if tfds_name:
        data = _load_tfds(tfds_name, tfds_data_dir, image_size, test_fraction, seed)
    elif image_folder:
        data = _load_image_folder(Path(image_folder), image_size, test_fraction, seed)
    elif dataset == "fashion_mnist":
        # Limited before resizing, so that a few images of a large size stay cheap.
        train_images, train_labels = _limit(
            *load_fashion_mnist("train", data_dir), train_limit, seed, 0
        )
        test_images, test_labels = _limit(
            *load_fashion_mnist("test", data_dir), test_limit, seed, 1
        )
        return ImageData(
            name="fashion_mnist",
            train_images=_resize_uint8(train_images, image_size),
            train_labels=train_labels,
            test_images=_resize_uint8(test_images, image_size),
            test_labels=test_labels,
            class_names=FASHION_MNIST_CLASSES,
        )
    else:
        raise DataError(
            f"unknown dataset {dataset!r}; the built-in datasets are {list(DATASETS)}, "
            "or pass tfds_name (a prepared tensorflow-datasets dataset) or image_folder "
            "(a folder with one sub-folder of images per class)"
        )
    if train_limit is None and test_limit is None:
        return data
    train_images, train_labels = _limit(data.train_images, data.train_labels, train_limit, seed, 0)
    test_images, test_labels = _limit(data.test_images, data.test_labels, test_limit, seed, 1)
    return dataclasses.replace(
        data,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )


def _limit(
    images: np.ndarray, labels: np.ndarray, limit: int | None, seed: int, stream: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` images after a shuffle seeded by (seed, stream)."""
    if limit is None:
        return images, labels
    keep = np.random.default_rng([seed, stream]).permutation(len(images))[:limit]
    return images[keep], labels[keep]


def _resize_uint8(images: np.ndarray, size: int | None, chunk: int = 1024) -> np.ndarray:
    """uint8 images [N, H, W, C] resized to [N, size, size, C] (bilinear), in chunks."""
    import tensorflow as tf

    if size is None or images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
    for start in range(0, len(images), chunk):
        resized = tf.image.resize(images[start : start + chunk], (size, size), "bilinear")
        out[start : start + chunk] = np.clip(np.round(resized.numpy()), 0, 255)
    return out


def _with_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 images [..., H, W, C] without alpha, converted to ``channels`` (1 or 3)."""
    if images.shape[-1] in (2, 4):  # gray + alpha, RGBA
        images = images[..., :-1]
    if images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    # ITU-R 601-2 luma, as tf.image.rgb_to_grayscale.
    gray = images.astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]


def _channels_of(image: np.ndarray, what: str) -> int:
    """1 for a gray [H, W, 1|2] image, 3 for a colour [H, W, 3|4] one (alpha ignored)."""
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise DataError(
            f"{what} has shape {image.shape}; expected [H, W, C] with C 1 or 3 (gray or RGB, "
            "optionally with alpha)"
        )
    return 1 if image.shape[-1] <= 2 else 3


def _stack_images(
    images: Sequence[np.ndarray], image_size: int | None, describe: Callable[[int], str]
) -> np.ndarray:
    """uint8 images [H, W, C] of one channel count and size, stacked into [N, H, W, C].

    All images get the channel count of the first (``_with_channels``). Without
    ``image_size`` all must have the size of the first, else a DataError names
    ``describe(i)`` of the first that differs; with it all are resized.
    """
    import tensorflow as tf

    channels = _channels_of(images[0], describe(0))
    converted = [_with_channels(image, channels) for image in images]
    sizes = [image.shape[:2] for image in converted]
    if all(size == sizes[0] for size in sizes):
        return _resize_uint8(np.stack(converted), image_size)
    if image_size is None:
        i = next(i for i, size in enumerate(sizes) if size != sizes[0])
        raise DataError(
            f"{describe(i)} is {sizes[i][0]}x{sizes[i][1]} pixels but {describe(0)} is "
            f"{sizes[0][0]}x{sizes[0][1]}; pass image_size to resize all images to one size"
        )
    out = np.empty((len(converted), image_size, image_size, channels), np.uint8)
    for i, image in enumerate(converted):
        resized = tf.image.resize(image, (image_size, image_size), "bilinear").numpy()
        out[i] = np.clip(np.round(resized), 0, 255)
    return out


def list_image_folder(root: Path) -> tuple[list[str], list[list[Path]]]:
    """(class names, each class's image files) of ``root/<class>/<image>``: the one
    listing of an image folder, in memory (``load_image_data``) and streamed
    (``data_sources.open_image_folder``, ``tfrecords.write_tfrecords``) alike.

    Classes are the sub-folders sorted by name; a class's files are those with
    an extension of ``IMAGE_EXTENSIONS`` (any case), sorted by name. Hidden
    folders and files (a leading '.', e.g. macOS's ``._x.jpg``) are skipped. A
    class folder without images is listed empty: the caller decides whether
    that is an error (a class list may drop it).
    """
    layout = (
        "expected one sub-folder per class holding image files "
        f"({', '.join(IMAGE_EXTENSIONS)}), e.g. {root}/cat/1.jpg"
    )
    if not root.is_dir():
        raise DataError(f"{root}: no such image folder; {layout}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; {layout}")
    files = [
        sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        for class_dir in class_dirs
    ]
    return [p.name for p in class_dirs], files


def empty_class_error(class_dir: Path) -> DataError:
    """The error for a class folder that holds no images."""
    return DataError(
        f"{class_dir}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
        "add images or remove the folder"
    )


def _load_image_folder(
    root: Path, image_size: int | None, test_fraction: float, seed: int
) -> ImageData:
    import tensorflow as tf

    names, listed = list_image_folder(root)
    files: list[Path] = []
    labels: list[int] = []
    for label, found in enumerate(listed):
        if not found:
            raise empty_class_error(root / names[label])
        files += found
        labels += [label] * len(found)
    images = []
    for path in files:
        try:
            encoded = tf.io.read_file(str(path))
            image = tf.io.decode_image(encoded, expand_animations=False).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            raise DataError(f"{path}: not a readable image ({e.message.strip()})") from e
        _channels_of(image, str(path))
        images.append(image)
    stacked = _stack_images(images, image_size, lambda i: str(files[i]))
    train, test = split_indices(len(files), test_fraction, seed)
    label_array = np.asarray(labels, np.int32)
    return ImageData(
        name=root.resolve().name,
        train_images=stacked[train],
        train_labels=label_array[train],
        test_images=stacked[test],
        test_labels=label_array[test],
        class_names=tuple(names),
    )


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


def _load_tfds(
    name: str,
    data_dir: str | os.PathLike | None,
    image_size: int | None,
    test_fraction: float,
    seed: int,
) -> ImageData:
    builder = tfds_builder(name, data_dir)
    info = builder.info
    train_images, train_labels = _read_tfds_split(builder, "train", image_size)
    if "test" in info.splits:
        test_images, test_labels = _read_tfds_split(builder, "test", image_size)
    else:
        train, test = split_indices(len(train_labels), test_fraction, seed)
        test_images, test_labels = train_images[test], train_labels[test]
        train_images, train_labels = train_images[train], train_labels[train]
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"tensorflow-datasets {name!r}: train images are {train_images.shape[1:]}, "
            f"test images {test_images.shape[1:]}; pass image_size to resize them to one size"
        )
    label_key = info.supervised_keys[1]
    label_feature = info.features[label_key] if isinstance(label_key, str) else None
    names = getattr(label_feature, "names", None)
    if not names:
        names = [str(i) for i in range(int(max(train_labels.max(), test_labels.max())) + 1)]
    return ImageData(
        name=name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=tuple(names),
    )


def _read_tfds_split(builder, split: str, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, H, W, C], int32 labels [N]) of one split, read into memory."""
    name = builder.info.full_name
    dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    image_spec, label_spec = dataset.element_spec
    if image_spec.dtype.name != "uint8" or image_spec.shape.rank not in (2, 3):
        raise DataError(
            f"tensorflow-datasets {name} {split}: inputs are {image_spec.dtype.name} "
            f"{image_spec.shape}, not uint8 images [H, W(, C)]; use an image dataset"
        )
    if not label_spec.dtype.is_integer or label_spec.shape.rank != 0:
        raise DataError(
            f"tensorflow-datasets {name} {split}: labels are {label_spec.dtype.name} "
            f"{label_spec.shape}, not integer class indices"
        )

    def describe(i: int) -> str:
        return f"{name} {split} image {i}"

    if image_spec.shape.rank == 2:
        dataset = dataset.map(lambda x, y: (x[..., None], y))
    if dataset.element_spec[0].shape.is_fully_defined():
        batches = list(dataset.batch(1024).as_numpy_iterator())
        if not batches:
            raise DataError(f"tensorflow-datasets {name} {split}: the split is empty")
        images = np.concatenate([x for x, _ in batches])
        labels = np.concatenate([y for _, y in batches])
        images = _resize_uint8(
            _with_channels(images, _channels_of(images[0], describe(0))), image_size
        )
    else:
        pairs = list(dataset.as_numpy_iterator())
        if not pairs:
            raise DataError(f"tensorflow-datasets {name} {split}: the split is empty")
        images = _stack_images([x for x, _ in pairs], image_size, describe)
        labels = np.asarray([y for _, y in pairs])
    return images, labels.astype(np.int32)


# --------------------------------------------------------------------------------------
# Statistics, augmentation and the training / evaluation pipelines
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


def _check_pipeline_arrays(images, labels, batch_size) -> None:
    _check_images_and_labels(images, labels, "pipeline")
    _positive_int(batch_size, "batch_size", "pass the number of images per batch")


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
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
        raise DataError(f"epoch must be a non-negative integer, got {epoch!r}")
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
