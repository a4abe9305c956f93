"""densenas-make-space in a checkout: the command densenas_tf.commands.make_space (see its
docstring, or run with --help)."""

from densenas_tf.commands.make_space import run

if __name__ == "__main__":
    run()
