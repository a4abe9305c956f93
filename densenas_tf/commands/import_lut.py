r"""Reads the timings of a latency bundle, made on another device, into a table.

  densenas-import-lut --bundle=bundles/fashion_mnist \
      --results=bundles/fashion_mnist/results.json --device="Raspberry Pi 5 (4 cores)" \
      [--out=configs/latency/fashion_mnist_pi5.json]

--results is the results.json of the bundle's measure.py, or the output of
its android.sh (TensorFlow Lite's benchmark_model). The table records the
device, the runtime and the bundle's fingerprint; search with it by
--latency_table=FILE. (In a checkout: python tools/import_lut.py.) Refused, each with its reason: results of
another bundle, missing pieces (named), non-positive, NaN or non-numeric
figures, units other than ms, us or s.
"""

from pathlib import Path

from absl import app, flags

from densenas_tf import cli
from densenas_tf.latency.bundle import import_results

BUNDLE = flags.DEFINE_string("bundle", None, "Bundle directory.", required=True)
RESULTS = flags.DEFINE_string(
    "results", None, "measure.py's results.json or benchmark_model's output.", required=True
)
DEVICE = flags.DEFINE_string("device", None, "The device that timed the bundle.", required=True)
OUT = flags.DEFINE_string("out", None, "Table file (default: BUNDLE/latency_table.json).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    table = import_results(BUNDLE.value, RESULTS.value, DEVICE.value)
    out = Path(OUT.value or Path(BUNDLE.value) / "latency_table.json")
    table.save(out)
    prov = table.provenance
    print(
        f"{out}: {len(table.entries)} entries of {prov['space']} on {prov['device']} "
        f"({prov['runtime']}, {prov['threads']} thread(s)), overhead {table.overhead_ms:.4f} ms"
    )
    check = prov.get("device_check")
    if check:
        rho = "" if check["spearman"] is None else f", Spearman {check['spearman']:.3f}"
        print(
            f"on the device, the table predicts {check['nets']} whole nets with "
            f"{check['mape_percent']:.1f} % mean error{rho}"
        )
        for row in check["rows"]:
            print(
                f"  {row['name']}: predicted {row['predicted_ms']:.3f} ms, "
                f"measured {row['measured_ms']:.3f} ms"
            )
    return 0


def run() -> None:
    cli.run(__name__, main, interrupted="nothing was written; re-run the same command")


if __name__ == "__main__":
    run()
