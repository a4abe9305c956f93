"""The warm-up ablation: supernet accuracy after N weight steps and cost per
step, for each training choice, printed as a table (and JSON).

  python tools/bench_warmup.py [--config=fashion_mnist_quick]
      [--variants='paper:weight_sharing="none";nested:weight_sharing="nested"']
      [--eval_steps=60,120,300] [--out=docs/warmup_ablation.json] [--cache_dir=runs/ablation]

A variant is NAME:OVERRIDE[,OVERRIDE...] (search-config key=value overrides);
variants are separated by ';'. Each runs in its own process, one after the other.
"""

import json
import sys

from absl import app, flags

import densenas_tf.commands  # noqa: F401 (first: the binary's environment, before TensorFlow)
from densenas_tf import cli

CONFIG = flags.DEFINE_string("config", "fashion_mnist_quick", "Search config preset or file.")
VARIANTS = flags.DEFINE_string(
    "variants",
    'paper:weight_sharing="none";nested:weight_sharing="nested"',
    "';'-separated NAME:key=value,key=value variants.",
)
EVAL_STEPS = flags.DEFINE_list("eval_steps", ["60", "120", "300"], "Evaluate after these steps.")
JSON_OUT = flags.DEFINE_string("out", None, "Also write the figures as JSON here.")
CACHE_DIR = flags.DEFINE_string(
    "cache_dir",
    None,
    "Keep each finished variant's figures here; a re-run with the same settings skips it.",
)
WORKER = flags.DEFINE_string(
    "worker", None, "Internal: run one variant and print JSON.", module_name=cli.INTERNAL
)
cli.deprecated_alias("json_out", JSON_OUT)


def _parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not name:
        raise app.UsageError(f"variant {text!r} must look like NAME:key=value,key=value")
    return name.strip(), [item for item in rest.split(",") if item.strip()]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from densenas_tf.experiments import warmup_ablation

    try:
        steps = sorted({int(s) for s in EVAL_STEPS.value})
    except ValueError:
        raise app.UsageError(f"--eval_steps must be integers, got {EVAL_STEPS.value}") from None
    if not steps or steps[0] < 1:
        raise app.UsageError("--eval_steps must be positive integers")
    if WORKER.value:
        name, overrides = _parse_variant(WORKER.value)
        result = warmup_ablation.run_variant(name, CONFIG.value, overrides, steps)
        print(json.dumps(result))
        return 0
    results = []
    for text in [v for v in VARIANTS.value.split(";") if v.strip()]:
        _parse_variant(text)
        cached = None
        if CACHE_DIR.value:
            import hashlib
            from pathlib import Path

            key = hashlib.sha256(f"{CONFIG.value}|{text}|{steps}".encode()).hexdigest()[:16]
            cached = Path(CACHE_DIR.value) / f"{key}.json"
            if cached.is_file():
                results.append(json.loads(cached.read_text()))
                print(f"{text}: cached in {cached}", file=sys.stderr)
                continue
        from densenas_tf.experiments.bench import run_worker

        result = run_worker(
            __file__,
            [
                f"--worker={text}",
                f"--config={CONFIG.value}",
                f"--eval_steps={','.join(map(str, steps))}",
            ],
            f"variant {text!r}",
        )
        if result is None:
            return 1
        results.append(result)
        if cached is not None:
            from densenas_tf.core.files import write_text_atomic

            write_text_atomic(cached, json.dumps(results[-1], indent=2) + "\n")
    print(warmup_ablation.format_table(results))
    if JSON_OUT.value:
        from densenas_tf.core.files import write_text_atomic

        payload = {"config": CONFIG.value, "eval_steps": steps, "variants": results}
        write_text_atomic(JSON_OUT.value, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    app.run(cli.main(main))
