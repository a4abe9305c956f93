"""Image folders: ``root/<class>/<image>`` files, read lazily.

``list_image_folder`` is the one listing of a folder (the reader and the
TFRecord writer use it); ``open_folder`` opens it as a ``stream.Source`` of one
"train" split, whose reader holds the file paths and labels and reads and
decodes the files inside the pipelines. Only the file names are read on
opening, and one image (the first) when the size or channel count is not
given: its size and channels become the data's, and then every image must have
that size (the pipelines stop at one that differs, naming both).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from densenas_tf.data.pipelines import listed_share
from densenas_tf.data.stream import (
    DEFAULT_CACHE_DIR,
    DataError,
    Source,
    Split,
    decode_named,
    read_checked,
    read_class_list,
    select_classes,
    sized_as_first,
)

# File suffixes (lower case) that the image-folder source reads.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# How to mend a file the pipeline cannot decode.
FOLDER_FIX = "remove the file or re-encode it (e.g. as PNG), then run again"


def list_image_folder(root: Path) -> tuple[list[str], list[list[Path]]]:
    """(class names, each class's image files) of ``root/<class>/<image>``: the one
    listing of an image folder (``open_folder``, ``tfrecords.write_tfrecords``).

    Classes are the sub-folders sorted by name; a class's files are those with
    an extension of ``IMAGE_EXTENSIONS`` (any case), sorted by name. Hidden
    folders and files (a leading '.', e.g. macOS's ``._x.jpg``) are skipped. A
    class folder without images is listed empty: the caller decides whether
    that is an error (a class list may drop it).
    """
    root = Path(root)
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


def _probe_image(path: Path) -> np.ndarray:
    """One image decoded, for a folder's default size and channel count."""
    import tensorflow as tf

    try:
        return tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as err:
        raise DataError(f"{path}: not a readable image ({err.message.strip()})") from err


class FolderReader:
    """Image files listed in memory: read lazily, shuffled exactly by permutation.

    ``first`` (the first file's name and (height, width)) makes every image
    decoded be checked to have that size."""

    indexed = True

    def __init__(
        self,
        paths: np.ndarray,
        labels: np.ndarray,
        channels: int,
        first: tuple[str, tuple[int, int]] | None = None,
    ):
        self.paths, self.labels, self.channels, self.first = paths, labels, channels, first
        self._path_tensor = None  # the paths as one tensor, made on the first decode

    def description(self) -> dict[str, Any]:
        return {
            "files": len(self.paths),
            "first": str(self.paths[:1]),
            "last": str(self.paths[-1:]),
        }

    def records(self, positions, shuffle_seed, context, whole: int):
        """(encoded bytes, label, example id) of the positions (None: all), this
        pipeline's share (``pipelines.listed_share``)."""
        import tensorflow as tf

        if positions is None:
            positions = np.flatnonzero(self.labels >= 0)
        order = listed_share(positions, shuffle_seed, context, whole)
        dataset = tf.data.Dataset.from_tensor_slices((self.paths[order], self.labels[order], order))
        return dataset.map(read_checked, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def decode(self, encoded, example_id):
        import tensorflow as tf

        if self._path_tensor is None:
            with tf.init_scope():  # an eager tensor, shared by every pipeline's graph
                self._path_tensor = tf.constant(self.paths)
        path = tf.gather(self._path_tensor, example_id)
        image = decode_named(encoded, self.channels, path, FOLDER_FIX)
        return sized_as_first(image, self.first, path)


def open_folder(
    root: str | os.PathLike,
    image_size: int | None = None,
    class_list: str | os.PathLike | None = None,
    channels: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Source:
    """A folder of ``<class>/<image>`` files as one "train" split (see the module doc)."""
    root = Path(root)
    names, files = list_image_folder(root)
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
    size, first = (image_size, image_size), None
    if image_size is None or channels is None:
        probed = _probe_image(Path(paths[0]))
        channels = channels or (1 if probed.shape[-1] <= 2 else 3)
        if image_size is None:
            size = (int(probed.shape[0]), int(probed.shape[1]))
            first = (paths[0], size)
    reader = FolderReader(np.asarray(paths), np.asarray(labels, np.int32), channels, first)
    return Source(
        name=root.resolve().name,
        class_names=kept,
        input_shape=(*size, channels),
        splits={"train": Split.whole(reader)},
        test_split=None,
        description={
            "kind": "image_folder",
            "root": str(root.resolve()),
            "classes": list(kept),
            "image_size": size[0] if size[0] == size[1] else list(size),
            "channels": channels,
            **reader.description(),
        },
        cache_dir=Path(cache_dir or DEFAULT_CACHE_DIR).expanduser(),
    )
