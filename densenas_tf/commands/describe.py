"""Prints a search space or an architecture as one JSON object on stdout.

  densenas-describe --space=imagenet_mbv2
  densenas-describe --arch=densenas_c [--input_size=224] [--num_classes=1000]

(In a checkout: python tools/describe.py with the same flags.)
"""

import json
import sys

from absl import app, flags

from densenas_tf import cli
from densenas_tf.space.arch_spec import load_arch
from densenas_tf.space.describe import describe_arch, describe_space, resize_arch
from densenas_tf.space.spaces import load_space

SPACE = flags.DEFINE_string("space", None, "Search-space preset name or YAML/JSON file.")
ARCH = flags.DEFINE_string("arch", None, "Shipped architecture name or ArchSpec JSON file.")
INPUT_SIZE = flags.DEFINE_integer(
    "input_size", None, "Square input size for --arch.", lower_bound=1
)
NUM_CLASSES = flags.DEFINE_integer("num_classes", None, "Classes for --arch.", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if (SPACE.value is None) == (ARCH.value is None):
        print("error: give exactly one of --space or --arch", file=sys.stderr)
        return 2
    if SPACE.value is not None:
        result = describe_space(load_space(SPACE.value))
    else:
        spec = resize_arch(load_arch(ARCH.value), INPUT_SIZE.value, NUM_CLASSES.value)
        result = describe_arch(spec)
    print(json.dumps(result))
    return 0


def run() -> None:
    cli.run(__name__, main, interrupted="nothing was written; re-run the same command")


if __name__ == "__main__":
    run()
