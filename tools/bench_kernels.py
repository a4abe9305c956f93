"""Times the two kernels of a depthwise kernel's gradient on a space's shapes.

  python tools/bench_kernels.py [--presets=fashion_mnist:128,imagenet_mbv2:8] [--runs=7]

For every depthwise convolution of the space's MBConv ops: TensorFlow's
registered gradient ('same' padding, oneDNN's kernel when oneDNN is on)
against the same padding given explicitly (TensorFlow's own kernel), and which
of the two the supernet uses (``op_layers.eigen_depthwise_kernel_gradient``).
"""

import json
import sys

from absl import app, flags

import densenas_tf.commands  # noqa: F401 (first: the binary's environment, oneDNN on)
from densenas_tf import cli

PRESETS = flags.DEFINE_list("presets", ["fashion_mnist:128"], "space:batch pairs.")
RUNS = flags.DEFINE_integer("runs", 7, "Timed calls per kernel (the median is reported).", 1)
JSON_OUT = flags.DEFINE_string("out", None, "Also write the figures as JSON here.")
cli.deprecated_alias("json_out", JSON_OUT)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from densenas_tf.experiments import bench, bench_kernels
    from densenas_tf.space.spaces import load_space

    results = {}
    for preset in PRESETS.value:
        name, _, batch = preset.partition(":")
        if not name or not batch.isdigit() or int(batch) < 1:
            raise app.UsageError(f"preset {preset!r} must look like space:batch")
        shapes = bench_kernels.depthwise_shapes(load_space(name), int(batch))
        rows = []
        for i, shape in enumerate(shapes, start=1):
            print(f"[{i}/{len(shapes)}] {name}: {shape}", file=sys.stderr, flush=True)
            rows.append(bench_kernels.time_depthwise_gradient(*shape, runs=RUNS.value))
        results[preset] = rows
        print(f"## {preset}\n")
        print(bench_kernels.format_depthwise_table(rows, bench.onednn_enabled()))
        print()
    if JSON_OUT.value:
        from densenas_tf.core.files import write_text_atomic

        write_text_atomic(JSON_OUT.value, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    app.run(cli.main(main, interrupted="nothing was written; re-run the same command"))
