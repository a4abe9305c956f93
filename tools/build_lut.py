"""densenas-build-lut in a checkout: the command densenas_tf.commands.build_lut (see its
docstring, or run with --help)."""

from densenas_tf.commands.build_lut import run

if __name__ == "__main__":
    run()
