"""densenas-train in a checkout: the command densenas_tf.commands.train (see its
docstring, or run with --help)."""

from densenas_tf.commands.train import run

if __name__ == "__main__":
    run()
