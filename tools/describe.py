"""densenas-describe in a checkout: the command densenas_tf.commands.describe (see its
docstring, or run with --help)."""

from densenas_tf.commands.describe import run

if __name__ == "__main__":
    run()
