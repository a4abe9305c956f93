"""densenas-derive in a checkout: the command densenas_tf.commands.derive (see its
docstring, or run with --help)."""

from densenas_tf.commands.derive import run

if __name__ == "__main__":
    run()
