"""Writes a search space made for your images: size, channels and classes.

  densenas-make-space --like=fashion_mnist --image_folder=DIR --out=my_space.yaml
  densenas-make-space --input_size=96 --channels=3 --num_classes=20 --out=my_space.yaml

(In a checkout: python tools/make_space.py with the same flags.)

With --image_folder, the first image's size and mode give the input shape (as
the search and training read the folder) and its sub-folders the classes;
--input_size (the images resized: pass the same --image_size to the other
commands), --channels and --num_classes replace what the folder says. The
space is of --like's kind (a preset of configs/spaces/ or a space file): its
ops, stem and widths, with the stem stride, resolutions and down-sampling
stages fitted to the image size (densenas_tf.space.make). The file is written
atomically, loaded back and summarised; an existing one is replaced only with
--overwrite.
"""

from pathlib import Path

from absl import app, flags

from densenas_tf import cli
from densenas_tf.data.sources import open_image_folder
from densenas_tf.space.describe import describe_space
from densenas_tf.space.make import MakeSpaceError, make_space_config, write_space

LIKE = flags.DEFINE_string(
    "like", "fashion_mnist", "The space to take after: a preset of configs/spaces/ or a file."
)
IMAGE_FOLDER = flags.DEFINE_string(
    "image_folder", None, "A folder with one sub-folder of images per class."
)
INPUT_SIZE = flags.DEFINE_integer(
    "input_size", None, "Square input size (default: the folder's first image's).", lower_bound=1
)
CHANNELS = flags.DEFINE_enum(
    "channels", None, ["1", "3"], "1 (grayscale) or 3 (colour) (default: the folder's)."
)
NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "Classes (default: the folder's class sub-folders).", lower_bound=1
)
NAME = flags.DEFINE_string("name", None, "The space's name (default: the --out file's name).")
OUT = flags.DEFINE_string("out", None, "The space file to write (.yaml).", required=True)
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out file.")


def _folder_shape(folder: str, input_size: int | None, channels: int | None):
    """(size, channels, classes, names) of an image folder, read as the search reads it."""
    data = open_image_folder(folder, input_size, channels=channels, test_fraction=0.0)
    height, width, found_channels = data.input_shape
    if height != width:
        raise MakeSpaceError(
            f"the images of {folder} are {height}x{width} pixels; a space takes square "
            f"images: pass --input_size=N here and --image_size=N to the search and training "
            "(they resize every image to NxN)"
        )
    return height, found_channels, data.num_classes, data.class_names


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out = Path(OUT.value)
    if out.exists() and not OVERWRITE.value and not out.is_dir():  # before reading any image
        raise MakeSpaceError(f"{out} exists; pick another file or pass --overwrite to replace it")
    channels = int(CHANNELS.value) if CHANNELS.value else None
    size, classes, names = INPUT_SIZE.value, NUM_CLASSES.value, None
    if IMAGE_FOLDER.value:
        found_size, channels, found_classes, names = _folder_shape(
            IMAGE_FOLDER.value, INPUT_SIZE.value, channels
        )
        size, classes = found_size, classes or found_classes
    else:
        missing = [
            f"--{flag.name}" for flag in (INPUT_SIZE, CHANNELS, NUM_CLASSES) if flag.value is None
        ]
        if missing:
            raise app.UsageError(
                f"give --image_folder, or the images' shape and classes: {' '.join(missing)}"
            )
    config = make_space_config(size, channels, classes, LIKE.value, NAME.value or out.stem)
    where = f"the images of {IMAGE_FOLDER.value}" if IMAGE_FOLDER.value else "the images"
    comment = (
        f"A space like {LIKE.value} for {where}: {size}x{size}x{channels}, {classes} classes"
        + (f" ({', '.join(names)})" if names and len(names) <= 20 else "")
        + ".\nMade by densenas-make-space (tools/make_space.py); its checks are the presets'."
    )
    space = write_space(out, config, comment, overwrite=OVERWRITE.value)
    summary = describe_space(space)
    sizes = sorted({b.feature_map_size for b in space.blocks}, reverse=True)
    print(
        f"wrote {out}: space {space.name!r}, {'x'.join(map(str, space.input_shape))} images, "
        f"{space.num_classes} classes\n"
        f"  stem stride {space.stem.stride}; feature maps {' -> '.join(map(str, sizes))} over "
        f"{space.num_stages} stages of {space.num_blocks - 1} blocks (widths "
        f"{space.blocks[1].width}..{space.blocks[-1].width}), final conv {space.final_conv_width}\n"
        f"  {summary['num_edges']} edges, {summary['num_paths']:,} paths, "
        f"{summary['weight_params']:,} supernet weights, "
        f"{summary['uniform_sampled_mult_adds'] / 1e6:.1f}M multiply-adds per sampled net"
    )
    resize = f" --image_size={size}" if IMAGE_FOLDER.value and INPUT_SIZE.value else ""
    folder = f" --image_folder={IMAGE_FOLDER.value}{resize}" if IMAGE_FOLDER.value else ""
    print(
        f"next: densenas-build-lut --space={out} --out=TABLE.json, then densenas-search "
        f"--override=space={out} --latency_table=TABLE.json{folder} --run_dir=DIR"
    )
    return 0


def run():
    cli.run(__name__, main, interrupted="nothing was written; re-run the same command")


if __name__ == "__main__":
    run()
