"""The package installs anywhere: a wheel built from the sources, installed in
a fresh virtual environment outside the checkout, finds its presets and
shipped tables as package data and runs its console scripts."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT

# Builds a wheel, makes an environment and runs two commands: the slow tier.
pytestmark = pytest.mark.slow

SOURCES = ("setup.py", "MANIFEST.in", "README.md", "densenas_tf", "configs")


def _run(command, cwd, env=None, timeout=300):
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(environment directory, its console scripts' folder, a clean environment for
    running them): the wheel of a copy of the sources, installed with --no-deps in a
    new virtual environment that sees this one's dependencies (a .pth file naming
    their site-packages; the .pth files there, such as an editable install's, are
    not read) and not the checkout."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, source / name)
    dist = tmp / "dist"
    # Offline: the build uses this environment's setuptools and wheel.
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(dist), "."],
        cwd=source,
    )  # fmt: skip
    (wheel,) = dist.glob("densenas_tf-*.whl")
    env_dir = tmp / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=tmp)
    python = env_dir / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=tmp,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "densenas_test_deps.pth").write_text(deps + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        cwd=tmp,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DENSENAS_CONFIG_DIR")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return env_dir, env_dir / "bin", env, wheel


def test_the_wheel_holds_the_presets_tables_and_console_scripts(installed):
    wheel = installed[3]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    for folder in ("spaces", "search", "train", "archs", "latency"):
        shipped = {p.name for p in (ROOT / "configs" / folder).iterdir()}
        packaged = {Path(n).name for n in names if n.startswith(f"densenas_tf/_configs/{folder}/")}
        assert packaged == shipped, folder
    for script in ("densenas-search", "densenas-derive", "densenas-train", "densenas-describe"):
        assert f"{script} = densenas_tf.commands." in scripts, script


def test_an_installed_package_runs_outside_the_checkout(installed, tmp_path):
    env_dir, bin_dir, env, _ = installed
    where = _run(
        [str(bin_dir / "python"), "-c",
         "import densenas_tf, sys; from densenas_tf.space.spaces import CONFIG_DIR; "
         "print(densenas_tf.__file__); print(CONFIG_DIR); print('\\n'.join(sys.path))"],
        cwd=tmp_path, env=env,
    ).stdout.splitlines()  # fmt: skip
    module, config_dir, *path = where
    assert Path(module).is_relative_to(env_dir), module
    assert Path(config_dir) == Path(module).parent / "_configs"
    assert not any(Path(p).resolve() == ROOT for p in path if p), path
    # A preset found in the package data.
    described = _run(
        [str(bin_dir / "densenas-describe"), "--space=fashion_mnist"], cwd=tmp_path, env=env
    )
    space = json.loads(described.stdout)
    assert (space["name"], space["input_shape"], space["num_classes"]) == (
        "fashion_mnist",
        [28, 28, 1],
        10,
    )
    # The shipped 1-thread table (package data, the default) against the 2-thread one.
    other = Path(config_dir) / "latency" / "fashion_mnist_tflite_t2_b1.json"
    compared = _run(
        [str(bin_dir / "densenas-lut-report"), "--space=fashion_mnist",
         f"--against={other}", "--json"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    comparison = json.loads(compared.stdout.strip().splitlines()[-1])
    shipped = json.loads((ROOT / "configs/latency/fashion_mnist_tflite_t1_b1.json").read_text())
    assert comparison["shared"] == len(shipped["entries"]), comparison
    assert comparison["only_in_table"] == comparison["only_in_other"] == []
