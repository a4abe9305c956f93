"""Evaluates an exported model on a dataset (densenas_tf.commands.evaluate)."""

from densenas_tf.commands import evaluate

if __name__ == "__main__":
    evaluate.run()
