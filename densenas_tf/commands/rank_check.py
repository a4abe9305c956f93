"""Does the supernet rank nets as training them alone does?

  densenas-rank-check --run_dir=runs/main/search [--out_dir=DIR] [--num_nets=12]
      [--min_ms=0.15 --max_ms=0.35] [--train_epochs=3] [--train_limit=20000]
      [--train_seeds=0,1]

Draws nets of the searched space spread over a latency range (default: 0.6-1.4x
the searched net's predicted latency), adds the searched net, scores each on
the supernet's shared weights (its path and ops alone, on the architecture
split, batch norm on batch statistics), trains each alone with each seed and
tests it, then prints Kendall's tau and Spearman's rho between the rankings
with bootstrap 95 % intervals, the stand-alone ranking's seed-to-seed tau and
latency's own tau. Writes rank_check.json, rank_check.md and rank_check.png
in --out_dir (default: RUN_DIR/../rank_check). Re-running resumes.
(In a checkout: python tools/rank_check.py with the same flags.)
"""

from pathlib import Path

from absl import app, flags

from densenas_tf import cli
from densenas_tf.experiments.rank_check import RankPlan, format_rank_check, run_rank_check

RUN_DIR = flags.DEFINE_string("run_dir", None, "A finished search's run directory.", required=True)
OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory (default: beside RUN_DIR).")
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Search checkpoint (default: latest).")
NUM_NETS = flags.DEFINE_integer("num_nets", 12, "Nets drawn (the searched one comes on top).")
MIN_MS = flags.DEFINE_float("min_ms", None, "Lower end of the latency range (ms).")
MAX_MS = flags.DEFINE_float("max_ms", None, "Upper end of the latency range (ms).")
TRAIN_EPOCHS = flags.DEFINE_integer("train_epochs", 3, "Stand-alone training epochs.")
TRAIN_LIMIT = flags.DEFINE_integer("train_limit", 20000, "Training images (0: all).")
TEST_LIMIT = flags.DEFINE_integer("test_limit", 0, "Test images (0: all).")
TRAIN_SEEDS = flags.DEFINE_list("train_seeds", ["0", "1"], "Stand-alone training seeds.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the drawn nets and the bootstrap.")
FINETUNE_STEPS = flags.DEFINE_integer(
    "finetune_steps", 100,
    "Also score each net after this many steps of training its path alone from the "
    "shared weights (0: no fine-tuned score).",
)  # fmt: skip
FINETUNE_LR = flags.DEFINE_float("finetune_lr", 0.01, "Learning rate of the fine-tuned score.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        seeds = tuple(int(s) for s in TRAIN_SEEDS.value)
    except ValueError:
        raise app.UsageError(f"--train_seeds must be integers, got {TRAIN_SEEDS.value}") from None
    plan = RankPlan(
        num_nets=NUM_NETS.value,
        min_ms=MIN_MS.value,
        max_ms=MAX_MS.value,
        train_epochs=TRAIN_EPOCHS.value,
        train_limit=TRAIN_LIMIT.value or None,
        test_limit=TEST_LIMIT.value or None,
        train_seeds=seeds,
        seed=SEED.value,
        checkpoint=CHECKPOINT.value,
        finetune_steps=FINETUNE_STEPS.value,
        finetune_lr=FINETUNE_LR.value,
    )
    run_dir = Path(RUN_DIR.value)
    out_dir = OUT_DIR.value or run_dir.parent / f"{run_dir.name}_rank_check"
    print(format_rank_check(run_rank_check(run_dir, out_dir, plan)))
    return 0


def run() -> None:
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
