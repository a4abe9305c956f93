"""Speed and memory of the search steps, printed as a table (and JSON).

  python tools/bench_step.py [--presets=imagenet_mbv2:8,fashion_mnist:128]
      [--warmup=3 --runs=10] [--out=bench.json] [--variants=default,eager_ops,layered_forward,arch_kernel_grads]
  python tools/bench_step.py --baseline=PATH_TO_OTHER_CHECKOUT [--rounds=2] [--out=...]
  python tools/bench_step.py --profile [--profile_out=docs/bench_profile.md]

Per preset (space:batch): median time and images per second of a weight step
(one op per layer), an architecture step (two ops per layer with the latency
term) and an all-ops forward, each after warm-up; peak resident memory (each
preset runs in its own process); and the multiply-add rate each step achieves
against this machine's dense float32 matmul rate.

``--baseline``: times the default variant of each preset with this checkout's
code and with another checkout's (e.g. ``git worktree add /tmp/base COMMIT``),
alternating the two for ``--rounds`` rounds in one run, and prints each
step's speed-up (the baseline's median seconds over this checkout's) and both
peak memories.

``--profile``: also runs TensorFlow's profiler over a few steps of each kind
and writes the time per kernel (summed over the executor threads) as a
Markdown table to ``--profile_out``.
"""

import json
import os
import sys

from absl import app, flags

import densenas_tf.commands  # noqa: F401 (first: the binary's environment, before TensorFlow)
from densenas_tf import cli

PRESETS = flags.DEFINE_list(
    "presets", ["imagenet_mbv2:8", "fashion_mnist:128"], "space:batch pairs to time."
)
WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first.", lower_bound=0)
RUNS = flags.DEFINE_integer("runs", 10, "Timed steps (the median is reported).", lower_bound=1)
JSON_OUT = flags.DEFINE_string("out", None, "Also write the figures as JSON here.")
VARIANTS = flags.DEFINE_list(
    "variants",
    ["default"],
    "default, and to measure a speed-up by undoing it: eager_ops (ops run kernel by kernel "
    "from Python), layered_forward (the forward goes layer by layer through the Keras mixed "
    "layers), arch_kernel_grads (the architecture step computes kernel gradients); and what "
    "a search option costs: nested (weight_sharing: nested), deterministic (op determinism); "
    "op_branches (a switch over whole ops); and static_draw, the floor: one draw per step held "
    "as constants, so the graph has the drawn ops only, timed beside the traced steps on it.",
)
BASELINE = flags.DEFINE_string(
    "baseline",
    None,
    "Another checkout of this project (a directory holding densenas_tf/ and tools/): time "
    "its steps and this checkout's in one run and print the speed-ups. This checkout runs "
    "the one --variants given (e.g. eager_steps), the baseline its default.",
)
ROUNDS = flags.DEFINE_integer(
    "rounds", 1, "With --baseline: alternate the two checkouts this many times.", lower_bound=1
)
PROFILE = flags.DEFINE_bool(
    "profile", False, "Profile a few steps of each kind and write the per-kernel table."
)
PROFILE_OUT = flags.DEFINE_string(
    "profile_out", "docs/bench_profile.md", "With --profile: where the per-kernel table goes."
)
PROFILE_STEPS = flags.DEFINE_integer(
    "profile_steps", 3, "With --profile: steps of each kind profiled.", lower_bound=1
)
MEMORY = flags.DEFINE_bool(
    "memory",
    False,
    "Also report the resident memory before and after each kind of step's first call (which "
    "builds its graph) and the traced graphs' sizes (with --baseline: this checkout's only).",
)
LATENCY_TABLE = flags.DEFINE_string(
    "latency_table",
    None,
    "The latency table of the architecture step's latency term (default: the space's "
    "shipped one; needed for a space file without one).",
)
# Internal: how the binary runs its own workers (not listed by --help).
WORKER = flags.DEFINE_string(
    "worker", None, "Internal: time one space:batch and print JSON.", module_name=cli.INTERNAL
)
WORKER_VARIANT = flags.DEFINE_string(
    "worker_variant", "default", "Internal.", module_name=cli.INTERNAL
)
WORKER_PROFILE = flags.DEFINE_integer("worker_profile", 0, "Internal.", module_name=cli.INTERNAL)
WORKER_MEMORY = flags.DEFINE_bool("worker_memory", False, "Internal.", module_name=cli.INTERNAL)
cli.deprecated_alias("json_out", JSON_OUT)


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
    from densenas_tf.experiments import bench

    if WORKER.value:
        name, batch = _parse(WORKER.value)
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        kwargs = {"variant": WORKER_VARIANT.value}
        if LATENCY_TABLE.value:
            from densenas_tf.latency.table import LatencyTable

            kwargs["table"] = LatencyTable.load(LATENCY_TABLE.value)
        if WORKER_PROFILE.value:
            kwargs["profile_steps"] = WORKER_PROFILE.value
        if WORKER_MEMORY.value:
            kwargs["memory"] = True
        figures = bench.bench_space(name, batch, WARMUP.value, RUNS.value, log, **kwargs)
        print(json.dumps(figures))
        return 0
    presets = [_parse(p) for p in PRESETS.value]
    if BASELINE.value:
        return _compare_with_baseline(bench, presets)
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
                    f"--worker_profile={PROFILE_STEPS.value if PROFILE.value else 0}",
                    *_memory_flag(),
                    *_table_flag(),
                ],
                f"benchmarking {name}:{batch} {variant}",
            )
            if result is None:
                return 1
            results.append(result)
    rate = bench.matmul_rate()
    print(bench.format_table(results, rate))
    if MEMORY.value:
        print()
        print(bench.format_memory(results))
    if JSON_OUT.value:
        from densenas_tf.core.files import write_text_atomic

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
    if PROFILE.value:
        from densenas_tf.core.files import write_text_atomic

        text = bench.format_profile(results, rate)
        write_text_atomic(PROFILE_OUT.value, text)
        print(f"per-kernel table written to {PROFILE_OUT.value}", file=sys.stderr)
    return 0


def _memory_flag() -> list[str]:
    return ["--worker_memory"] if MEMORY.value else []


def _table_flag() -> list[str]:
    if not LATENCY_TABLE.value:
        return []
    return [f"--latency_table={os.path.abspath(LATENCY_TABLE.value)}"]


def _compare_with_baseline(bench, presets) -> int:
    """Times this checkout and the --baseline checkout alternately, prints the ratios."""
    from pathlib import Path

    ours_root = Path(__file__).resolve().parent.parent
    base_root = Path(BASELINE.value).expanduser().resolve()
    base_script = base_root / "tools" / "bench_step.py"
    if not (base_root / "densenas_tf").is_dir() or not base_script.is_file():
        raise app.UsageError(
            f"--baseline={BASELINE.value} is not a checkout of this project (it needs "
            "densenas_tf/ and tools/bench_step.py); make one with "
            "`git worktree add /tmp/baseline COMMIT`"
        )
    if len(VARIANTS.value) != 1 or VARIANTS.value[0] not in bench.VARIANTS:
        raise app.UsageError(
            f"with --baseline, --variants takes one variant for this checkout (the baseline "
            f"runs its default), one of {list(bench.VARIANTS)}; got {VARIANTS.value}"
        )
    variant = VARIANTS.value[0]
    comparisons, raw = {}, {}
    base_onednn = None  # whether the baseline's environment runs oneDNN, asked on demand
    for name, batch in presets:
        runs = {"ours": [], "baseline": []}
        for round_ in range(ROUNDS.value):
            for who, root, script in (
                ("ours", ours_root, __file__),
                ("baseline", base_root, str(base_script)),
            ):
                result = bench.run_worker(
                    script,
                    [
                        f"--worker={name}:{batch}",
                        *(
                            [f"--worker_variant={variant}", *_memory_flag()]
                            if who == "ours"
                            else []
                        ),
                        f"--warmup={WARMUP.value}",
                        f"--runs={RUNS.value}",
                        *_table_flag(),
                    ],
                    f"benchmarking {name}:{batch} ({who}, round {round_ + 1}/{ROUNDS.value})",
                    root=str(root),
                )
                if result is None:
                    return 1
                if "onednn" not in result:  # an older checkout: ask its environment once
                    if base_onednn is None:
                        base_onednn = bench.onednn_in_worker(str(root))
                    result["onednn"] = base_onednn
                runs[who].append(result)
        preset = f"{name}:{batch}"
        comparisons[preset] = bench.compare_figures(runs["ours"], runs["baseline"])
        raw[preset] = runs
    base_commit = bench.checkout_commit(base_root)
    label = f"baseline {base_commit[:7]}" if base_commit else "baseline"
    ours_label = "this checkout" if variant == "default" else f"this checkout ({variant})"
    print(bench.format_comparison(comparisons, label, ours_label))
    if MEMORY.value:
        print()
        print(bench.format_memory([r for preset in raw.values() for r in preset["ours"]]))
    if JSON_OUT.value:
        from densenas_tf.core.files import write_text_atomic

        payload = {
            "baseline": {"path": str(base_root), "commit": base_commit},
            "ours": {
                "path": str(ours_root),
                "commit": bench.checkout_commit(ours_root),
                "variant": variant,
            },
            "warmup": WARMUP.value,
            "runs": RUNS.value,
            "rounds": ROUNDS.value,
            "comparison": comparisons,
            "figures": raw,
        }
        write_text_atomic(JSON_OUT.value, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    app.run(cli.main(main, interrupted="nothing was written; re-run the same command"))
