"""densenas-stability in a checkout: the command densenas_tf.commands.stability (see its
docstring, or run with --help)."""

from densenas_tf.commands.stability import run

if __name__ == "__main__":
    run()
