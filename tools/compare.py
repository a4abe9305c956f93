"""The paper's Fig. 5 experiment on Fashion-MNIST: DenseNAS against a fixed-block
search, MobileNetV2-style nets and keras-tuner random search, at equal latency.

  python tools/compare.py --run_dir=runs/compare [--reduced] [--results_dir=docs/results]

Every net is retrained with the same recipe and seed, tested, and timed as
float TFLite (1 thread, batch 1). Each stage is cached in the run directory, so
re-running resumes. --reduced runs the whole pipeline in minutes (tiny
schedules; its numbers say nothing about the methods).
"""

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

RUN_DIR = flags.DEFINE_string("run_dir", "runs/compare", "Run directory.")
REDUCED = flags.DEFINE_bool("reduced", False, "Tiny schedules, for a check of the pipeline.")
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Also copy compare.md, compare.png and results.json here."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from densenas_tf.compare import REDUCED as REDUCED_PLAN
    from densenas_tf.compare import ComparePlan, format_results, run_compare
    from densenas_tf.data import DataError
    from densenas_tf.latency import LatencyTableError
    from densenas_tf.search_config import ConfigError

    try:
        results = run_compare(RUN_DIR.value, REDUCED_PLAN if REDUCED.value else ComparePlan())
    except (ConfigError, DataError, LatencyTableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_results(results))
    if RESULTS_DIR.value:
        out = Path(RESULTS_DIR.value)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("compare.md", "compare.png", "results.json"):
            shutil.copyfile(Path(RUN_DIR.value) / name, out / name)
        print(f"results copied to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
