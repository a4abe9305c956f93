r"""Measures the latency table of a search space on this device.

  densenas-build-lut --space=fashion_mnist --backend=tflite --threads=1 \
      --batch_size=1 --out=configs/latency/fashion_mnist_tflite_t1_b1.json

Each entry (stem, every head op per edge shape, every stacking op per block,
the final conv per input, the classifier) is timed as its own small model.
Re-running on an existing file measures only what is missing, so an
interrupted build resumes; a file measured for another space, or for an
earlier content of this one, is refused with the command that rebuilds it.

For another device (a phone, a board), write a bundle instead of timing here:

  densenas-build-lut --space=fashion_mnist --bundle=bundles/fashion_mnist [--threads=N]

The bundle holds every piece as a .tflite file, a manifest, measure.py (needs
only Python, NumPy and ai-edge-litert) and android.sh (adb and
benchmark_model); import the timings with densenas-import-lut. (In a checkout: python
tools/build_lut.py and tools/import_lut.py with the same flags.)
"""

import os

from absl import app, flags

from densenas_tf import cli
from densenas_tf.latency.bundle import write_bundle
from densenas_tf.latency.measure import build_table, pin_threads
from densenas_tf.latency.table import LatencyTable, default_table_path
from densenas_tf.space.spaces import load_space

SPACE = flags.DEFINE_string(
    "space", None, "Search-space preset name or YAML/JSON file.", required=True
)
BACKEND = flags.DEFINE_enum("backend", "tflite", ["tflite", "tf"], "Runtime to time.")
THREADS = flags.DEFINE_integer("threads", 1, "Threads of the runtime.", lower_bound=1)
QUANTIZATION = flags.DEFINE_enum(
    "quantization",
    "none",
    ["none", "int8"],
    "How each piece is converted: float32 (none), or int8 as the exporter quantizes a net "
    "(int8 weights and activations; uint8 image input).",
)
BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 1, "Batch size of every measured model.", lower_bound=1
)
OUT = flags.DEFINE_string(
    "out", None, "Table file (default: configs/latency/SPACE_BACKEND_tT_bB.json)."
)
BUNDLE = flags.DEFINE_string(
    "bundle",
    None,
    "Write the pieces as a bundle in this directory, to time on another device "
    "(tools/import_lut.py reads the timings back); nothing is timed here.",
)
BUNDLE_NETS = flags.DEFINE_integer(
    "bundle_nets",
    5,
    "Random whole nets in the bundle, to check the imported table on the device.",
    lower_bound=0,
)
WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed runs before timing.", lower_bound=0)
RUNS = flags.DEFINE_integer("runs", 100, "Timed runs per entry.", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    space = load_space(SPACE.value)
    if BUNDLE.value:
        if OUT.value or BACKEND.value != "tflite":
            raise app.UsageError("--bundle writes .tflite pieces: give no --out and no --backend")
        manifest = write_bundle(
            space,
            BUNDLE.value,
            THREADS.value,
            BATCH_SIZE.value,
            BUNDLE_NETS.value,
            quantization=QUANTIZATION.value,
        )
        print(
            f"{BUNDLE.value}: {len(manifest['pieces'])} pieces; on the device run "
            f"'python3 measure.py' there (or 'sh android.sh > benchmark_model.log'), then "
            f"densenas-import-lut --bundle={BUNDLE.value} --results=FILE --device=NAME"
        )
        return 0
    pin_threads(THREADS.value)
    out = OUT.value or default_table_path(
        space.name, BACKEND.value, THREADS.value, BATCH_SIZE.value, QUANTIZATION.value
    )
    if os.path.isfile(out):
        # Checked (every entry, and the space's content) before anything is measured.
        LatencyTable.load(out).check_fingerprint(space, SPACE.value)
    table, measured = build_table(
        space,
        out,
        BACKEND.value,
        THREADS.value,
        BATCH_SIZE.value,
        WARMUP.value,
        RUNS.value,
        quantization=QUANTIZATION.value,
    )
    print(
        f"{out}: {len(table.entries)} entries ({measured} measured now), overhead {table.overhead_ms:.4f} ms"
    )
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
