"""densenas-main-job in a checkout: the command densenas_tf.commands.main_job (see its
docstring, or run with --help)."""

from densenas_tf.commands.main_job import run

if __name__ == "__main__":
    run()
