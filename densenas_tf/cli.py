"""What the binaries share: the one place their errors are caught, how a
command module runs as a process's binary, deprecated flag spellings, and the
absl flags of the binaries that read image data (train, export, main job)."""

from __future__ import annotations

import copy
import functools
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from absl import app, flags, logging

from densenas_tf.core.errors import DenseNASError, describe_os_error, tf_os_error
from densenas_tf.core.runtime import last_progress
from densenas_tf.data.sources import (
    SOURCE_KEYS,
    StreamingData,
    data_error,
    load_image_data,
    sample_image_data,
)
from densenas_tf.data.sources import open_data as open_source
from densenas_tf.exporting.export import load_trained_model
from densenas_tf.search.config import STREAMING_SOURCES

# The exit code of a run stopped by Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED_EXIT = 130
# What a binary that resumes says when Ctrl-C stops it.
RESUMES = "re-running the same command resumes it"


class FlagConflictError(DenseNASError):
    """Two spellings of one setting given with different values."""


def main(
    run: Callable[[list[str]], int | None],
    interrupted: str = RESUMES,
) -> Callable[[list[str]], int | None]:
    """Wraps a binary's ``main(argv)``: every error a user can act on
    (:class:`densenas_tf.core.errors.DenseNASError`, a file-system fault, or
    TensorFlow's own I/O errors) is printed as one line, ``error: ...``, and
    the binary exits with the error's exit code (1 unless the error class
    says otherwise); Ctrl-C prints one line, where the run stopped and
    ``interrupted`` (what re-running does), and exits with 130; nothing else is
    caught, so a bug still shows its traceback.

    Before ``run``: deprecated flag spellings are applied to their flags (with
    one warning line each), and absl's logging is quiet below warnings unless
    the user gave ``--verbosity``."""

    @functools.wraps(run)
    def wrapped(argv: list[str]) -> int | None:
        try:
            apply_deprecated_flags()
            if not flags.FLAGS["verbosity"].present:
                logging.set_verbosity(logging.WARNING)
            return run(argv)
        except DenseNASError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except OSError as err:
            print(f"error: {describe_os_error(err)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"interrupted {_where_stopped()}; {interrupted}", file=sys.stderr)
            return INTERRUPTED_EXIT
        except Exception as err:
            # An input pipeline's named data failure (an image that cannot be
            # decoded, met mid-run inside Keras's fit) is one line too, and so
            # is a file-system fault that TensorFlow reports as its own error.
            converted = _pipeline_data_error(err)
            if converted is not None:
                print(f"error: {converted}", file=sys.stderr)
                return converted.exit_code
            os_error = tf_os_error(err)
            if os_error is None:
                raise
            print(f"error: {describe_os_error(os_error)}", file=sys.stderr)
            return 1

    return wrapped


def _where_stopped() -> str:
    """Where a run was when it stopped: its last progress line's label and step."""
    progress = last_progress()
    if progress is None:
        return "before its first step"
    label, done, total = progress
    return f"in {label} at step {done}/{total}"


# ----- running a command module as the process's binary --------------------------------


def run(module_name: str, command: Callable[[list[str]], int | None], **kwargs: Any) -> None:
    """Runs the ``main`` of command module ``module_name`` as this process's
    binary (a console script ``densenas-*``, a ``tools/`` wrapper or
    ``python -m``): its docstring is the usage text, its flags are the ones
    ``--help`` lists (those defined under another module name, such as
    internal or deprecated ones, show only in ``--helpfull``), and it runs
    wrapped by :func:`main` (``kwargs`` are :func:`main`'s)."""

    module = sys.modules[module_name]
    main_module = sys.modules["__main__"]
    if main_module is not module:
        main_module.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main(command, **kwargs))


# The internal and deprecated flags are defined under these module names, so
# that a binary's --help does not list them.
INTERNAL = "densenas_tf.internal"
DEPRECATED = "densenas_tf.deprecated"

# Deprecated spelling -> the flag it stands for (this process's binary).
_DEPRECATED: dict[str, str] = {}


def deprecated_alias(old: str, holder: flags.FlagHolder) -> None:
    """Defines ``--old`` as a deprecated spelling of ``holder``'s flag: it
    still works for one release, with a warning line naming the new spelling;
    giving both is refused."""

    flag = copy.deepcopy(flags.FLAGS[holder.name])
    flag.name, flag.short_name = old, None
    flag.help = f"Deprecated spelling of --{holder.name}."
    flag.present = 0
    flags.DEFINE_flag(flag, module_name=DEPRECATED)
    _DEPRECATED[old] = holder.name


def apply_deprecated_flags() -> None:
    """Gives each deprecated spelling the user gave to its flag, with a warning."""

    for old, new in _DEPRECATED.items():
        given = flags.FLAGS[old]
        if not given.present:
            continue
        target = flags.FLAGS[new]
        if target.present:
            raise FlagConflictError(
                f"--{old} and --{new} are one flag (--{old} is its old spelling); give --{new} only"
            )
        print(f"warning: --{old} is deprecated; use --{new}", file=sys.stderr)
        target.value = given.value
        target.present = given.present


def refuse_override_conflicts(
    flag_keys: Mapping[str, Iterable[str] | str], overrides: Iterable[str]
) -> None:
    """Refuses a flag given together with an ``--override`` of a config key it
    sets (``flag_keys``: flag name -> the key or keys it sets): neither would
    win silently."""

    overridden = {item.split("=", 1)[0].strip(): item for item in overrides if "=" in item}
    for name, keys in flag_keys.items():
        if not flags.FLAGS[name].present:
            continue
        for key in [keys] if isinstance(keys, str) else keys:
            if key in overridden:
                raise FlagConflictError(
                    f"--{name} and --override={overridden[key]} both set {key}; give one of them"
                )


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


def define_data_flags(names: Iterable[str] | None = None) -> None:
    """Defines the data-source flags (``names``: only these; default all of
    DATA_FLAGS), each once per process. They belong to the binary that calls
    this (this module disclaims its flags), so the binary's ``--help`` lists
    them."""
    wanted = set(DATA_FLAGS if names is None else names)
    unknown = wanted - set(DATA_FLAGS)
    assert not unknown, f"no such data flags: {sorted(unknown)}"
    definitions = {
        "dataset": lambda: flags.DEFINE_string(
            "dataset", "fashion_mnist", "Built-in dataset read from its IDX files."
        ),
        "data_dir": lambda: flags.DEFINE_string(
            "data_dir", None, "Directory of the Fashion-MNIST IDX files (default: Debian's)."
        ),
        "tfds_name": lambda: flags.DEFINE_string(
            "tfds_name", None, "A tensorflow-datasets name, already prepared (never downloaded)."
        ),
        "tfds_data_dir": lambda: flags.DEFINE_string(
            "tfds_data_dir", None, "tensorflow-datasets data directory."
        ),
        "image_folder": lambda: flags.DEFINE_string(
            "image_folder", None, "A folder with one sub-folder of images per class."
        ),
        "image_size": lambda: flags.DEFINE_integer(
            "image_size", None, "Resize images to this square size."
        ),
        "test_fraction": lambda: flags.DEFINE_float(
            "test_fraction", 0.2, "Test share of sources without a test split."
        ),
        "data_seed": lambda: flags.DEFINE_integer(
            "data_seed", 0, "Seed of the data splits and limits."
        ),
        "train_limit": lambda: flags.DEFINE_integer(
            "train_limit", None, "Use only N training images (seeded choice)."
        ),
        "test_limit": lambda: flags.DEFINE_integer(
            "test_limit", None, "Use only N test images (seeded choice)."
        ),
        "tfrecord_dir": lambda: flags.DEFINE_string(
            "tfrecord_dir", None, "TFRecord shards written by densenas-write-tfrecords (streamed)."
        ),
        "class_list": lambda: flags.DEFINE_string(
            "class_list", None, "File of class names (or synset ids), one a line: use only these."
        ),
        "stream": lambda: flags.DEFINE_enum(
            "stream",
            None,
            ["true", "false"],
            "true: stream a tfds dataset or image folder from disk (default: only when it would "
            "take over 2 GB in memory). false: decode TFRecords once into memory (by default "
            "they stream).",
        ),
        "data_cache_dir": lambda: flags.DEFINE_string(
            "data_cache_dir",
            None,
            "Where streamed data's channel statistics and label indexes are cached "
            "(default: ~/.cache/densenas_tf; TFRecords: their directory).",
        ),
    }
    for name in DATA_FLAGS:
        if name in wanted and name not in flags.FLAGS:
            definitions[name]()


def data_source_from_flags(recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data source: the flags a user set, else a recorded source, else the defaults."""
    values = {name: flags.FLAGS[name].value for name in DATA_FLAGS}
    if recorded and not any(flags.FLAGS[name].present for name in DATA_FLAGS):
        values.update({k: v for k, v in recorded.items() if k in values})
    return {k: v for k, v in values.items() if k not in STREAMING_FLAGS or v is not None}


def search_data_overrides(overrides: Iterable[str] = ()) -> list[str]:
    """The data flags a user set (those of SEARCH_DATA_KEYS the binary
    defines), as ``data.*`` overrides of a search config; a flag given with an
    ``--override`` of the same key (in ``overrides``) is refused."""

    given = [name for name in STREAMING_SOURCES if _present(name)]
    refuse_override_conflicts(
        {name: f"data.{key}" for name, key in SEARCH_DATA_KEYS.items() if name in flags.FLAGS},
        overrides,
    )
    result = []
    if given:  # a source named on the command line replaces the config's source
        result += [f"data.{name}=null" for name in STREAMING_SOURCES if name not in given]
    for name, key in SEARCH_DATA_KEYS.items():
        if _present(name):
            result.append(f"data.{key}={json.dumps(flags.FLAGS[name].value)}")
    return result


def _present(name: str) -> bool:
    return name in flags.FLAGS and bool(flags.FLAGS[name].present)


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
