"""The progress display: redrawn in place on a terminal, whole lines in a log."""

import io

import pytest

from densenas_tf.core.runtime import Progress


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


def _onednn_in_fresh_python(env_value, first="densenas_tf"):
    """(ONEDNN_SET_HERE, TF_ENABLE_ONEDNN_OPTS, oneDNN kernels on) in a new
    process that imports ``first`` before TensorFlow."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    code = (
        f"import json, os, {first}, densenas_tf\n"
        "from densenas_tf.experiments.bench import onednn_enabled\n"
        "print(json.dumps([densenas_tf.ONEDNN_SET_HERE, "
        "os.environ.get('TF_ENABLE_ONEDNN_OPTS'), onednn_enabled()]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_the_package_changes_no_environment_and_a_binary_turns_on_onednn():
    # Importing the package leaves TensorFlow's own default (which depends on the CPU).
    assert _onednn_in_fresh_python(None)[:2] == [False, None]
    assert _onednn_in_fresh_python(None, "densenas_tf.commands") == [True, "1", True]
    assert _onednn_in_fresh_python("0", "densenas_tf.commands") == [False, "0", False]


@pytest.mark.slow
def test_a_baseline_worker_gets_the_users_onednn_setting_not_the_packages(tmp_path, monkeypatch):
    import densenas_tf
    from densenas_tf.experiments import bench

    script = tmp_path / "env.py"
    script.write_text(
        "import json, os\nprint(json.dumps({'flag': os.environ.get('TF_ENABLE_ONEDNN_OPTS')}))\n"
    )
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setattr(densenas_tf, "ONEDNN_SET_HERE", True)
    assert bench.run_worker(str(script), [], "ours") == {"flag": "1"}
    assert bench.run_worker(str(script), [], "baseline", root=str(tmp_path)) == {"flag": None}
    monkeypatch.setattr(densenas_tf, "ONEDNN_SET_HERE", False)  # the user set it
    assert bench.run_worker(str(script), [], "baseline", root=str(tmp_path)) == {"flag": "1"}
    # A baseline checkout that does not report its kernels: its environment is asked.
    assert bench.onednn_in_worker(str(tmp_path)) is True
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert bench.onednn_in_worker(str(tmp_path)) is False
