"""densenas-evaluate in a checkout: the command densenas_tf.commands.evaluate (see its
docstring, or run with --help)."""

from densenas_tf.commands.evaluate import run

if __name__ == "__main__":
    run()
