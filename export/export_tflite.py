"""densenas-export-tflite in a checkout: the command densenas_tf.commands.export_tflite
(see its docstring, or run with --help)."""

from densenas_tf.commands.export_tflite import run

if __name__ == "__main__":
    run()
