"""Where the traced search steps' first call goes, printed as a table.

  python tools/bench_trace.py [--grappler=on|off] [--runs=5]

Builds the fashion_mnist supernet (nested kernels, batch 128) with traced
steps and times, for the weight and the architecture step: the Python trace
(``get_concrete_function``), the first run (graph optimisation by Grappler,
kernels), and the median of later steps. ``--grappler=off`` turns
TensorFlow's graph optimiser off for the whole process (docs/speed.md).
"""

import tempfile
import time

import numpy as np
from absl import app, flags

import densenas_tf.commands  # noqa: F401 (first: the binary's environment, before TensorFlow)

GRAPPLER = flags.DEFINE_enum("grappler", "on", ["on", "off"], "TensorFlow's graph optimiser.")
RUNS = flags.DEFINE_integer("runs", 5, "Later steps timed (the median is printed).", lower_bound=1)


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    if GRAPPLER.value == "off":
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    from densenas_tf.latency.table import LatencyTable, default_table_path
    from densenas_tf.nn.supernet import SuperNet
    from densenas_tf.search.config import SearchConfig
    from densenas_tf.search.searcher import Searcher
    from densenas_tf.search.steps import int32_draw
    from densenas_tf.space.spaces import load_space

    space = load_space("fashion_mnist")
    table = LatencyTable.load(default_table_path(space.name))
    config = SearchConfig(
        space=space.name, batch_size=128, epochs=2, warmup_epochs=0, weight_sharing="nested"
    )
    keras.utils.set_random_seed(0)
    net = SuperNet.from_space(space, weight_sharing="nested")
    pixels = np.random.default_rng(0).integers(0, 256, size=(128, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(128, dtype=np.int32) % space.num_classes
    images = tf.constant((pixels.astype(np.float32) / 255.0 - 0.5) / 0.25)
    batch = (images, tf.constant(labels))
    print(f"| grappler {GRAPPLER.value} | Python trace | first run | later steps (median) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as run_dir:
        steps = Searcher(config, net, table, (pixels, labels), (pixels, labels), run_dir).steps
        kinds = (("weight", 0, "softmax", steps.weight_step), ("arch", 1, "two", steps.arch_step))
        for kind, index, policy, step in kinds:

            def draw(i, policy=policy, index=index):
                return net.sample_ops(tf.constant([index, i], tf.int64), policy)

            start = time.perf_counter()
            steps.traced_steps[index].get_concrete_function(batch, int32_draw(draw(0)))
            traced = time.perf_counter()
            step(batch, draw(0))
            first = time.perf_counter()
            later = []
            for i in range(1, RUNS.value + 1):
                t = time.perf_counter()
                step(batch, draw(i))
                later.append(time.perf_counter() - t)
            print(
                f"| {kind} step | {traced - start:.1f} s | {first - traced:.1f} s "
                f"| {np.median(later):.2f} s |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    app.run(main)
