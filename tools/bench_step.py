"""Speed and memory of the search steps, printed as a table (and JSON).

  python tools/bench_step.py [--presets=imagenet_mbv2:8,fashion_mnist:128]
      [--warmup=3 --runs=10] [--json_out=bench.json] [--variants=default,eager_ops,layered_forward,arch_kernel_grads]

Per preset (space:batch): median time and images per second of a weight step
(one op per layer), an architecture step (two ops per layer with the latency
term) and an all-ops forward, each after warm-up; peak resident memory (each
preset runs in its own process); and the multiply-add rate each step achieves
against this machine's dense float32 matmul rate.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

PRESETS = flags.DEFINE_list(
    "presets", ["imagenet_mbv2:8", "fashion_mnist:128"], "space:batch pairs to time."
)
WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first.", lower_bound=0)
RUNS = flags.DEFINE_integer("runs", 10, "Timed steps (the median is reported).", lower_bound=1)
JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the figures as JSON here.")
VARIANTS = flags.DEFINE_list(
    "variants",
    ["default"],
    "default, and to measure a speed-up by undoing it: eager_ops (ops run kernel by kernel "
    "from Python), layered_forward (the forward goes layer by layer through the Keras mixed "
    "layers), arch_kernel_grads (the architecture step computes kernel gradients); and what "
    "a search option costs: nested (weight_sharing: nested), deterministic (op determinism).",
)
WORKER = flags.DEFINE_string("worker", None, "Internal: time one space:batch and print JSON.")
WORKER_VARIANT = flags.DEFINE_string("worker_variant", "default", "Internal.")


def _parse(preset: str) -> tuple[str, int]:
    name, _, batch = preset.partition(":")
    if not name or not batch.isdigit() or int(batch) < 1:
        raise app.UsageError(
            f"preset {preset!r} must look like space:batch, e.g. fashion_mnist:128"
        )
    return name, int(batch)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from densenas_tf import bench

    if WORKER.value:
        name, batch = _parse(WORKER.value)
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        figures = bench.bench_space(
            name, batch, WARMUP.value, RUNS.value, log, variant=WORKER_VARIANT.value
        )
        print(json.dumps(figures))
        return 0
    presets = [_parse(p) for p in PRESETS.value]
    unknown = sorted(set(VARIANTS.value) - set(bench.VARIANTS))
    if unknown:
        raise app.UsageError(f"unknown variants {unknown}; variants are {list(bench.VARIANTS)}")
    results = []
    for name, batch in presets:
        for variant in VARIANTS.value:
            result = bench.run_worker(
                __file__,
                [
                    f"--worker={name}:{batch}",
                    f"--worker_variant={variant}",
                    f"--warmup={WARMUP.value}",
                    f"--runs={RUNS.value}",
                ],
                f"benchmarking {name}:{batch} {variant}",
            )
            if result is None:
                return 1
            results.append(result)
    rate = bench.matmul_rate()
    print(bench.format_table(results, rate))
    if JSON_OUT.value:
        from densenas_tf.io_utils import write_text_atomic

        payload = {
            "matmul_mult_adds_per_s": rate,
            # "space:batch" for the default variant, "space:batch:variant" otherwise
            "presets": {
                ":".join(
                    [r["space"], str(r["batch_size"])]
                    + ([r["variant"]] if r["variant"] != "default" else [])
                ): r
                for r in results
            },
        }
        write_text_atomic(JSON_OUT.value, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    app.run(main)
