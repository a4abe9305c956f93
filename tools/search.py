"""densenas-search in a checkout: the command densenas_tf.commands.search (see its
docstring, or run with --help)."""

from densenas_tf.commands.search import run

if __name__ == "__main__":
    run()
