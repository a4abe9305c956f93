"""densenas-budget-sweep in a checkout: the command densenas_tf.commands.budget_sweep (see its
docstring, or run with --help)."""

from densenas_tf.commands.budget_sweep import run

if __name__ == "__main__":
    run()
