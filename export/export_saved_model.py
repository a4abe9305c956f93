"""densenas-export-saved-model in a checkout: the command
densenas_tf.commands.export_saved_model (see its docstring, or run with --help)."""

from densenas_tf.commands.export_saved_model import run

if __name__ == "__main__":
    run()
