"""Writes a search space made for your images (densenas_tf.commands.make_space)."""

from densenas_tf.commands import make_space

if __name__ == "__main__":
    make_space.run()
