"""densenas-rank-check in a checkout: the command densenas_tf.commands.rank_check (see its
docstring, or run with --help)."""

from densenas_tf.commands.rank_check import run

if __name__ == "__main__":
    run()
