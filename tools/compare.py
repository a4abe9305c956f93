"""densenas-compare in a checkout: the command densenas_tf.commands.compare (see its
docstring, or run with --help)."""

from densenas_tf.commands.compare import run

if __name__ == "__main__":
    run()
