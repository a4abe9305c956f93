"""What the binaries share: the one place their errors are caught, and the
absl flags of the binaries that read image data (train, export, main job)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import flags

from densenas_tf.core.errors import DenseNASError, describe_os_error
from densenas_tf.data.sources import (
    SOURCE_KEYS,
    DataError,
    StreamingData,
    data_error,
    load_image_data,
    sample_image_data,
)
from densenas_tf.data.sources import open_data as open_source
from densenas_tf.exporting.export import load_trained_model
from densenas_tf.search.config import STREAMING_SOURCES


def main(
    run: Callable[[list[str]], int | None],
) -> Callable[[list[str]], int | None]:
    """Wraps a binary's ``main(argv)``: every error a user can act on
    (:class:`densenas_tf.core.errors.DenseNASError`, or a file-system fault) is
    printed as one line, ``error: ...``, and the binary exits with the error's
    exit code (1 unless the error class says otherwise); nothing else is
    caught, so a bug still shows its traceback."""

    @functools.wraps(run)
    def wrapped(argv: list[str]) -> int | None:
        try:
            return run(argv)
        except DenseNASError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except OSError as err:
            print(f"error: {describe_os_error(err)}", file=sys.stderr)
            return 1
        except Exception as err:
            # An input pipeline's named data failure (an image that cannot be
            # decoded, met mid-run inside Keras's fit) is one line too.
            converted = _pipeline_data_error(err)
            if converted is None:
                raise
            print(f"error: {converted}", file=sys.stderr)
            return converted.exit_code

    return wrapped


def _pipeline_data_error(err: Exception):
    """The DataError a TensorFlow error stands for (``data_sources.data_error``), or None."""
    if not type(err).__module__.startswith("tensorflow"):
        return None

    return data_error(err)


# The flags defined here are the calling binary's, shown by its --help.
flags.disclaim_key_flags()

DATA_FLAGS = SOURCE_KEYS
# The streaming flags, recorded in a run's data source only when set, so that
# sources recorded before they existed still compare equal.
STREAMING_FLAGS = ("tfrecord_dir", "class_list", "stream", "data_cache_dir")
# The data flags tools/search.py turns into ``data.*`` config overrides.
SEARCH_DATA_KEYS = {
    "data_dir": "data_dir",
    "tfds_name": "tfds_name",
    "tfds_data_dir": "tfds_data_dir",
    "image_folder": "image_folder",
    "tfrecord_dir": "tfrecord_dir",
    "class_list": "class_list",
    "image_size": "image_size",
    "train_limit": "train_limit",
    "data_cache_dir": "cache_dir",
}


def define_data_flags() -> None:
    """Defines the data-source flags (once per process). They belong to the
    binary that calls this (this module disclaims its flags), so the binary's
    ``--help`` lists them."""
    if "dataset" in flags.FLAGS:
        return
    flags.DEFINE_string("dataset", "fashion_mnist", "Built-in dataset read from its IDX files.")
    flags.DEFINE_string(
        "data_dir", None, "Directory of the Fashion-MNIST IDX files (default: Debian's)."
    )
    flags.DEFINE_string(
        "tfds_name", None, "A tensorflow-datasets name, already prepared (never downloaded)."
    )
    flags.DEFINE_string("tfds_data_dir", None, "tensorflow-datasets data directory.")
    flags.DEFINE_string("image_folder", None, "A folder with one sub-folder of images per class.")
    flags.DEFINE_integer("image_size", None, "Resize images to this square size.")
    flags.DEFINE_float("test_fraction", 0.2, "Test share of sources without a test split.")
    flags.DEFINE_integer("data_seed", 0, "Seed of the data splits and limits.")
    flags.DEFINE_integer("train_limit", None, "Use only N training images (seeded choice).")
    flags.DEFINE_integer("test_limit", None, "Use only N test images (seeded choice).")
    flags.DEFINE_string(
        "tfrecord_dir", None, "TFRecord shards written by tools/write_tfrecords.py (streamed)."
    )
    flags.DEFINE_string(
        "class_list", None, "File of class names (or synset ids), one a line: use only these."
    )
    flags.DEFINE_enum(
        "stream",
        None,
        ["true", "false"],
        "true: stream a tfds dataset or image folder from disk (default: only when it would "
        "take over 2 GB in memory). false: decode TFRecords once into memory (by default "
        "they stream).",
    )
    flags.DEFINE_string(
        "data_cache_dir",
        None,
        "Where streamed data's channel statistics and label indexes are cached "
        "(default: ~/.cache/densenas_tf; TFRecords: their directory).",
    )


def data_source_from_flags(recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data source: the flags a user set, else a recorded source, else the defaults."""
    values = {name: flags.FLAGS[name].value for name in DATA_FLAGS}
    if recorded and not any(flags.FLAGS[name].present for name in DATA_FLAGS):
        values.update({k: v for k, v in recorded.items() if k in values})
    return {k: v for k, v in values.items() if k not in STREAMING_FLAGS or v is not None}


def search_data_overrides() -> list[str]:
    """The data flags a user set, as ``data.*`` overrides of a search config."""

    overrides = []
    given = [name for name in STREAMING_SOURCES if flags.FLAGS[name].present]
    if given:  # a source named on the command line replaces the config's source
        overrides += [f"data.{name}=null" for name in STREAMING_SOURCES if name not in given]
    for name, key in SEARCH_DATA_KEYS.items():
        if flags.FLAGS[name].present:
            overrides.append(f"data.{key}={json.dumps(flags.FLAGS[name].value)}")
    for name in ("test_fraction", "test_limit", "data_seed", "stream"):
        if flags.FLAGS[name].present:
            raise DataError(
                f"--{name} does not apply to the search (it trains on the training images, "
                "divided by data.arch_fraction and the config's seed); drop it"
            )
    return overrides


def recorded_data_source(model_path: str | Path) -> dict[str, Any] | None:
    """The data source written by tools/train.py beside its model.keras, if any."""
    record = Path(model_path).parent / "train_config.json"
    if record.is_file():
        return json.loads(record.read_text()).get("data")
    return None


# Images the exporters take at most from a streamed source, per split, unless
# train_limit / test_limit say otherwise (their checks use up to 1,000 test images;
# int8 calibrates on 200 training images by default).
EXPORT_IMAGES = 1000


def load_data(source: dict[str, Any]):
    """The data.ImageData the exporters check and calibrate with, from a source
    dict (the keys of DATA_FLAGS).

    Fashion-MNIST is read into memory (limited by train_limit / test_limit).
    Any other source is opened as training opens it (``data.streaming.open_data``,
    so the test split is the one training held out): a source that training
    holds in memory (at most ``IN_MEMORY_LIMIT_BYTES`` of pixels) is read
    likewise; a streamed one (TFRecords always) gives only a bounded sample:
    train_limit and test_limit images, or ``EXPORT_IMAGES`` of each split by
    default, read from the stream and nothing more."""

    streamed = any(source.get(k) for k in ("tfrecord_dir", "tfds_name", "image_folder"))
    streamed = streamed or source.get("class_list") or str(source.get("stream")).lower() == "true"
    if not streamed:
        kwargs = {k: v for k, v in source.items() if k not in STREAMING_FLAGS}
        kwargs["seed"] = kwargs.pop("data_seed", 0)
        return load_image_data(**kwargs)

    data = open_source(source, stream=True if source.get("tfrecord_dir") else None)
    if not isinstance(data, StreamingData):
        return data
    return sample_image_data(
        data,
        source.get("train_limit") or EXPORT_IMAGES,
        source.get("test_limit") or EXPORT_IMAGES,
        source.get("data_seed") or 0,
    )


def open_data(source: dict[str, Any]):
    """The data of a source dict for training: in memory or streamed, as
    ``data.streaming.open_data`` picks."""

    return open_source(source)


def run_export(model_path: str, export) -> int:
    """What both exporters do around their export: load the trained model and
    its data (the training run's unless data flags are given) and call
    ``export(model, data)``. Failures reach :func:`main` (exit 1: bad input;
    2: the written export failed its check and was removed)."""

    model = load_trained_model(model_path)
    data = load_data(data_source_from_flags(recorded_data_source(model_path)))
    export(model, data)
    return 0
