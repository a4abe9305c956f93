"""Derives the architecture of a search run from its latest (or a given) checkpoint.

  python tools/derive.py --run_dir=runs/search [--checkpoint=runs/search/ckpt/ckpt-300] [--out=arch.json]

Prints the ArchSpec JSON on stdout (and writes it to --out when given).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from densenas_tf import cli

RUN_DIR = flags.DEFINE_string("run_dir", None, "Run directory of a search.", required=True)
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (default: the latest).")
OUT = flags.DEFINE_string("out", None, "Also write the ArchSpec here.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from densenas_tf.search.run import derive_from_checkpoint

    spec = derive_from_checkpoint(RUN_DIR.value, CHECKPOINT.value)
    if OUT.value:
        spec.save(OUT.value)
    print(spec.to_json(), end="")
    return 0


if __name__ == "__main__":
    app.run(cli.main(main))
