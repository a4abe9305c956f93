"""densenas-write-tfrecords in a checkout: the command densenas_tf.commands.write_tfrecords (see its
docstring, or run with --help)."""

from densenas_tf.commands.write_tfrecords import run

if __name__ == "__main__":
    run()
