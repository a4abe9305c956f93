"""Screenshots of TensorBoard's dashboards for a run directory, for the docs.

    python tools/tensorboard_screenshots.py --logdir=runs/main --out_dir=docs/tensorboard

Starts TensorBoard on the log directory (localhost only), opens each dashboard
in headless Chromium (Debian's ``chromium``: ``apt-get install chromium``) and
writes one PNG per dashboard to --out_dir. Nothing is fetched from the network.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

from densenas_tf import cli
from densenas_tf.core.errors import DenseNASError

LOGDIR = flags.DEFINE_string("logdir", None, "TensorBoard log directory.", required=True)
OUT = flags.DEFINE_string("out_dir", "docs/tensorboard", "Directory of the PNGs.")
CHROMIUM = flags.DEFINE_string("chromium", "chromium", "The Chromium binary.")
WAIT_MS = flags.DEFINE_integer("wait_ms", 20000, "Virtual time each page gets to render.")
SIZE = flags.DEFINE_string("size", "1400,1000", "Window width,height in pixels.")
DASHBOARDS = flags.DEFINE_list(
    "dashboards",
    [
        "scalars:scalars&tagFilter=weight_step%7Ceval%7Ctrain%2F(loss%7Caccuracy%7Clearning_rate)",
        "custom_scalars:custom_scalars",
        "images:images",
        "text:text",
        "histograms:histograms",
    ],
    "name:URL fragment pairs (the fragment after '#').",
)


cli.deprecated_alias("out", OUT)


class ScreenshotError(DenseNASError):
    """A screenshot that could not be taken; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise ScreenshotError(f"TensorBoard exited with status {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise ScreenshotError(f"TensorBoard did not answer on port {port} within {timeout:.0f} s")


def main(argv):
    del argv
    logdir = Path(LOGDIR.value)
    if not logdir.is_dir():
        raise ScreenshotError(f"--logdir {logdir} is not a directory")
    chromium = shutil.which(CHROMIUM.value)
    if chromium is None:
        raise ScreenshotError(
            f"{CHROMIUM.value!r} not found; install Debian's Chromium "
            "(apt-get install chromium) or pass --chromium=PATH"
        )
    out = Path(OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", f"--port={port}",
         "--host=127.0.0.1", "--load_fast=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(port, board)
        time.sleep(5)  # let TensorBoard read the event files
        for entry in DASHBOARDS.value:
            name, fragment = entry.split(":", 1)
            target = out / f"{name}.png"
            with tempfile.TemporaryDirectory() as profile:
                command = [
                    chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    f"--user-data-dir={profile}", f"--window-size={SIZE.value}",
                    f"--virtual-time-budget={WAIT_MS.value}", f"--screenshot={target.resolve()}",
                    f"http://127.0.0.1:{port}/#{fragment}",
                ]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if done.returncode != 0 or not target.is_file():
                raise ScreenshotError(f"Chromium failed on {name}: {done.stderr.strip()[-300:]}")
            print(f"{name}: {target}")
    finally:
        board.terminate()
        board.wait(timeout=30)


if __name__ == "__main__":
    app.run(cli.main(main))
