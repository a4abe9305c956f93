"""densenas-time-nets in a checkout: the command densenas_tf.commands.time_nets (see its
docstring, or run with --help)."""

from densenas_tf.commands.time_nets import run

if __name__ == "__main__":
    run()
