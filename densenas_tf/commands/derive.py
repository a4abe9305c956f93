"""Derives the architecture of a search run from its latest (or a given) checkpoint.

  densenas-derive --run_dir=runs/search [--checkpoint=runs/search/ckpt/ckpt-300]
      [--target_ms=0.25 [--min_fraction=0.95]] [--out=arch.json]

(In a checkout: python tools/derive.py with the same flags.)

Prints the ArchSpec JSON on stdout (and writes it to --out when given), and
its predicted latency on stderr. With --target_ms (or when the search had a
budget) the net is the most probable one whose latency on the search's table
is at most the budget, and at least --min_fraction of it when that one is
not (by default the search's own, 0.95 if it had none); without, the paper's
(Viterbi path, then argmax ops). Re-deriving under another budget needs no
new search.
"""

import sys

from absl import app, flags

from densenas_tf import cli
from densenas_tf.search.run import derive_from_checkpoint

RUN_DIR = flags.DEFINE_string("run_dir", None, "Run directory of a search.", required=True)
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (default: the latest).")
OUT = flags.DEFINE_string("out", None, "Also write the ArchSpec here.")
TARGET_MS = flags.DEFINE_float(
    "target_ms",
    None,
    "Latency budget in ms on the search's latency table (default: the search's own "
    "budget, if it had one).",
)
MIN_FRACTION = flags.DEFINE_float(
    "min_fraction",
    None,
    "Under a budget: when the most probable net within it predicts under this fraction of "
    "it, derive the most probable in [fraction, 1] x budget (0: at most the budget only; "
    "default: the search's objective.min_fraction, else the one its derivation recorded, "
    "else 0.95).",
    lower_bound=0.0,
    upper_bound=1.0,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    spec = derive_from_checkpoint(
        RUN_DIR.value, CHECKPOINT.value, TARGET_MS.value, min_fraction=MIN_FRACTION.value
    )
    budget = spec.provenance.get("budget")
    if budget:
        band = budget.get("band")
        used = ""
        if band:
            used = (
                f"; the most probable net within the budget predicts "
                f"{band['most_probable_within_budget_ms']:.4f} ms, "
                + (
                    f"under {band['low_ms']:.4f} ms: the most probable in the band taken"
                    if band["met"]
                    else f"and no net reaches {band['low_ms']:.4f} ms: it is kept"
                )
            )
        print(
            f"budget {budget['target_ms']:.4f} ms: predicted {budget['predicted_ms']:.4f} ms, "
            f"{budget['ops_not_argmax']} op(s) other than the most probable of their layer; "
            f"the paper's derivation predicts {budget['paper_derivation_ms']:.4f} ms{used}",
            file=sys.stderr,
        )
    if OUT.value:
        spec.save(OUT.value)
    print(spec.to_json(), end="")
    return 0


def run() -> None:
    cli.run(__name__, main, interrupted="nothing was written; re-run the same command")


if __name__ == "__main__":
    run()
