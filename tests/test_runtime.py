"""The progress display: redrawn in place on a terminal, whole lines in a log."""

import io

from densenas_tf.runtime import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_log_gets_a_whole_line_per_interval_and_at_the_end():
    stream, clock = io.StringIO(), _Clock()
    progress = Progress("epoch 1/2 weight", 10, stream=stream, log_every=30.0, clock=clock)
    for _ in range(10):
        clock.now += 7.0  # a line at 35 s, 70 s (steps 5, 10) and the last step
        progress.update({"ce": 0.5})
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split("] ")[1].split()[0] for line in lines] == ["5/10", "10/10"]
    assert lines[-1].startswith("epoch 1/2 weight [####################] 10/10 7.00 s/step ETA 0 s")
    assert lines[-1].endswith("ce 0.5")


def test_a_terminal_gets_one_line_redrawn_then_a_newline():
    stream, clock = _Terminal(), _Clock()
    progress = Progress("train", 3, start_at=1, stream=stream, clock=clock)
    for _ in range(2):
        clock.now += 2.0
        progress.update({})
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "2/3 2.00 s/step ETA 2 s" in text and "3/3 2.00 s/step ETA 0 s" in text
