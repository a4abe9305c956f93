"""densenas-lut-report in a checkout: the command densenas_tf.commands.lut_report (see its
docstring, or run with --help)."""

from densenas_tf.commands.lut_report import run

if __name__ == "__main__":
    run()
