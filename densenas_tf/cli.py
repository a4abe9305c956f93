"""absl flags shared by the binaries that read image data (train, export, main job)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import flags

DATA_FLAGS = (
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
)


def define_data_flags() -> None:
    """Defines the data-source flags (once per process)."""
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


def data_source_from_flags(recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data source: the flags a user set, else a recorded source, else the defaults."""
    values = {name: flags.FLAGS[name].value for name in DATA_FLAGS}
    if recorded and not any(flags.FLAGS[name].present for name in DATA_FLAGS):
        values.update({k: v for k, v in recorded.items() if k in values})
    return values


def recorded_data_source(model_path: str | Path) -> dict[str, Any] | None:
    """The data source written by tools/train.py beside its model.keras, if any."""
    record = Path(model_path).parent / "train_config.json"
    if record.is_file():
        return json.loads(record.read_text()).get("data")
    return None


def load_data(source: dict[str, Any]):
    """Loads data.ImageData from a source dict (the keys of DATA_FLAGS)."""
    from densenas_tf.data import load_image_data

    kwargs = dict(source)
    kwargs["seed"] = kwargs.pop("data_seed", 0)
    return load_image_data(**kwargs)


def run_export(model_path: str, export) -> int:
    """What both exporters do around their export: load the trained model and
    its data (the training run's unless data flags are given), call
    ``export(model, data)``, and map failures to exit codes (1: bad input,
    2: the written export failed its check and was removed)."""
    import sys

    from densenas_tf.data import DataError
    from densenas_tf.exporting import ExportCheckError, ExportError, load_trained_model

    try:
        model = load_trained_model(model_path)
        data = load_data(data_source_from_flags(recorded_data_source(model_path)))
        export(model, data)
    except ExportCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ExportError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
