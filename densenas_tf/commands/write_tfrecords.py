r"""Writes TFRecord shards for streaming, from an image folder or a prepared tfds dataset.

  densenas-write-tfrecords --out_dir=DIR --split=train \
      (--image_folder=train_dir | --tfds_name=imagenet2012 --tfds_data_dir=DIR [--tfds_split=train])
      [--class_list=FILE] [--image_size=256] [--records_per_shard=1024]

Run it once per split (e.g. --split=test --tfds_split=validation for ImageNet's
validation images). The shards and their dataset.json are what --tfrecord_dir
reads in densenas-search and densenas-train. Progress lines go to stderr.
(In a checkout: python tools/write_tfrecords.py with the same flags.)

Writing a split again replaces it atomically: the new shards are staged in
the directory and take over only when complete (one rename of dataset.json),
so a write that fails or is interrupted leaves the previous split readable.
"""

from absl import app, flags

from densenas_tf import cli
from densenas_tf.data.tfrecords import write_tfrecords

OUT_DIR = flags.DEFINE_string("out_dir", None, "Directory of the shards.", required=True)
SPLIT = flags.DEFINE_enum("split", "train", ["train", "test"], "The split written.")
IMAGE_FOLDER = flags.DEFINE_string(
    "image_folder", None, "A folder with one sub-folder of images per class."
)
TFDS_NAME = flags.DEFINE_string("tfds_name", None, "A prepared tensorflow-datasets name.")
TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "tensorflow-datasets data directory.")
TFDS_SPLIT = flags.DEFINE_string("tfds_split", None, "The tfds split read (default: --split).")
CLASS_LIST = flags.DEFINE_string("class_list", None, "Write only these classes (one a line).")
IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "Resize to this square size on writing (default: keep the files).", 1
)
RECORDS_PER_SHARD = flags.DEFINE_integer("records_per_shard", 1024, "Records per shard.", 1)
SEED = flags.DEFINE_integer("seed", 0, "Seed of the written order (image folders).", 0)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    description = write_tfrecords(
        OUT_DIR.value,
        SPLIT.value,
        image_folder=IMAGE_FOLDER.value,
        tfds_name=TFDS_NAME.value,
        tfds_data_dir=TFDS_DATA_DIR.value,
        tfds_split=TFDS_SPLIT.value,
        class_list=CLASS_LIST.value,
        image_size=IMAGE_SIZE.value,
        records_per_shard=RECORDS_PER_SHARD.value,
        seed=SEED.value,
    )
    split = description["splits"][SPLIT.value]
    print(
        f"{OUT_DIR.value}: {len(split['labels'])} {SPLIT.value} records, "
        f"{len(split['shards'])} shards, {len(description['class_names'])} classes"
    )
    return 0


def run() -> None:
    cli.run(
        __name__,
        main,
        interrupted="the previous split, if any, is kept; re-run the same command to write it",
    )


if __name__ == "__main__":
    run()
