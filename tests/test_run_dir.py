"""Run directories: one process at a time (the lock), whose directory is whose
(the marker), and what --overwrite may delete (only what a run writes)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SMALL_FASHION_NET

from densenas_tf.core import run_dir as run_dirs
from densenas_tf.core.run_dir import LOCK_NAME, MARKER_NAME, RunDirError, locked_run_dir
from densenas_tf.data.sources import load_image_data
from densenas_tf.search.config import SearchConfig
from densenas_tf.search.run import prepare_run_dir, run_search
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace
from densenas_tf.train.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent

# Holds the lock of every directory named on its command line until its stdin closes.
HOLDER = """
import contextlib, sys
from densenas_tf.core.run_dir import locked_run_dir
with contextlib.ExitStack() as stack:
    for run_dir in sys.argv[1:]:
        stack.enter_context(locked_run_dir(run_dir))
    print("locked", flush=True)
    sys.stdin.read()
"""

SPACE = {
    "name": "lock_micro",
    "input_shape": [28, 28, 1],
    "num_classes": 10,
    "stem": {"conv_width": 8, "stride": 1, "op": "mbconv_k3_e1"},
    "blocks": {
        "widths": [8, 12, 16],
        "feature_map_sizes": [28, 14, 7],
        "stages": [0, 1, 2],
        "stacking_layers": [0, 1, 0],
    },
    "connections_per_stage": [2, 2, 2],
    "head_ops": ["mbconv_k3_e3", "mbconv_k5_e3"],
    "stacking_ops": ["mbconv_k3_e3", "skip"],
    "final_conv_width": 16,
}


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def holder():
    """Starts a process holding the locks of the given directories: (process, pid)."""
    started = []

    def start(*run_dirs):
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *map(str, run_dirs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        started.append(process)
        assert process.stdout.readline() == "locked\n"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.stdin.close()
            process.wait(timeout=60)


def _in_use(run_dir, pid):
    return (
        f"{run_dir} is in use by process {pid} (it holds {run_dir / LOCK_NAME}); wait for that "
        "run to end or stop it, or pick another run directory"
    )


def _search_config(folder, **overrides):
    """A search config of a small space with a flat latency table (nothing measured)."""
    from densenas_tf.latency.table import LatencyEntry, LatencyTable, new_provenance, space_keys

    space_file = folder / "lock_micro.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    space = SearchSpace.from_config(SPACE)
    table = LatencyTable(
        new_provenance(space, "tflite", 1, 1, "flat (no device)", {}), overhead_ms=0.0
    )
    for key in space_keys(space).all_keys():
        table.entries[key] = LatencyEntry(0.1, 0.1, 0.0, 1)
    table.save(folder / "lock_micro_lut.json")
    values = {
        "space": str(space_file),
        "latency_table": str(folder / "lock_micro_lut.json"),
        "data": {"train_limit": 320, "arch_fraction": 0.2},
        "batch_size": 32,
        "epochs": 1,
        "warmup_epochs": 0,
        "latency_check": False,
        "deterministic": False,
    }
    values.update(overrides)
    return SearchConfig.from_dict(values)


def _files(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_a_held_run_dir_refuses_the_search_and_the_training_even_with_overwrite(tmp_path, holder):
    search_dir, train_dir = tmp_path / "search", tmp_path / "train"
    # The holder's runs: a search and a finished training of other configs.
    search_dir.mkdir()
    (search_dir / "config.json").write_text(_search_config(tmp_path, epochs=5).to_json())
    (search_dir / "ckpt").mkdir()
    (search_dir / "ckpt" / "ckpt-3.index").write_bytes(b"the holder's")
    train_dir.mkdir()
    (train_dir / "train_config.json").write_text(json.dumps({"train": "another"}))
    (train_dir / "metrics.json").write_text("{}")
    process = holder(search_dir, train_dir)
    before = {d: _files(d) for d in (search_dir, train_dir)}
    assert (search_dir / LOCK_NAME).read_text() == f"{process.pid}\n"

    with pytest.raises(RunDirError) as refused:
        run_search(_search_config(tmp_path), search_dir, overwrite=True, log=lambda line: None)
    assert str(refused.value) == _in_use(search_dir, process.pid)
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    data = load_image_data("fashion_mnist", train_limit=64, test_limit=32)
    with pytest.raises(RunDirError) as refused:
        train(spec, data, train_dir, TrainConfig(epochs=1, batch_size=32), overwrite=True)
    assert str(refused.value) == _in_use(train_dir, process.pid)
    # The binaries say so in one line and exit 1.
    arch_file = tmp_path / "small.json"
    spec.save(arch_file)
    config_file = tmp_path / "search.json"
    config_file.write_text(_search_config(tmp_path).to_json())
    commands = {
        search_dir: ["tools/search.py", f"--config={config_file}"],
        train_dir: ["tools/train.py", f"--arch={arch_file}", "--train_limit=64", "--batch_size=32"],
    }
    for run_dir, (tool, *flags) in commands.items():
        result = subprocess.run(
            [sys.executable, str(ROOT / tool), *flags, f"--run_dir={run_dir}", "--overwrite"],
            capture_output=True,
            text=True,
            timeout=600,
            env=_env(),
        )
        assert result.returncode == 1, result.stderr[-3000:]
        assert f"error: {_in_use(run_dir, process.pid)}\n" in result.stderr
    assert {d: _files(d) for d in (search_dir, train_dir)} == before  # nothing deleted
    # Once the holder is done, the directory is free again.
    process.stdin.close()
    process.wait(timeout=60)
    with locked_run_dir(search_dir):
        assert (search_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_killed_holder_leaves_no_lock_behind(tmp_path, holder):
    process = holder(tmp_path / "run")
    with pytest.raises(RunDirError, match=f"in use by process {process.pid}"):
        with locked_run_dir(tmp_path / "run"):
            pass
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    with locked_run_dir(tmp_path / "run"):
        # One process, two opens: still one holder at a time.
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
            with locked_run_dir(tmp_path / "run"):
                pass


def test_overwrite_empties_the_run_dir_but_keeps_its_lock_file(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(_search_config(tmp_path, epochs=5).to_json())
    (run_dir / "ckpt").mkdir()
    (run_dir / "ckpt" / "ckpt-3.index").write_bytes(b"old")
    config = _search_config(tmp_path)
    logged = []
    with locked_run_dir(run_dir):
        with pytest.raises(RunDirError, match="pass --overwrite to delete it"):
            prepare_run_dir(run_dir, config, overwrite=False)
        assert prepare_run_dir(run_dir, config, overwrite=True, log=logged.append) is False
        assert sorted(p.name for p in run_dir.iterdir()) == [MARKER_NAME, LOCK_NAME, "config.json"]
        assert (run_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert json.loads((run_dir / "config.json").read_text()) == json.loads(config.to_json())
    assert logged == [f"--overwrite: deleting the run with another config in {run_dir}"]


def test_a_folder_that_is_no_run_is_never_emptied_and_overwrite_is_never_offered(tmp_path):
    # A user's project folder that happens to hold a config.json.
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "config.json").write_text(json.dumps({"name": "my project"}))
    (project / "README.md").write_text("# mine\n")
    before = _files(project)
    message = (
        f"{project} is not a search run directory: beside config.json it holds files no "
        "search run writes (README.md, src/); pick another --run_dir"
    )
    config = _search_config(tmp_path)
    for overwrite in (False, True):
        with locked_run_dir(project):
            with pytest.raises(RunDirError) as refused:
                prepare_run_dir(project, config, overwrite=overwrite)
        assert str(refused.value) == message
        assert {k: v for k, v in _files(project).items() if k != LOCK_NAME} == before
    # The binary says so in one line and exits 1, also with --overwrite.
    config_file = tmp_path / "search.json"
    config_file.write_text(config.to_json())
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "search.py"),
            f"--config={config_file}",
            f"--run_dir={project}",
            "--overwrite",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"error: {message}\n" in result.stderr
    assert {k: v for k, v in _files(project).items() if k != LOCK_NAME} == before


def test_a_training_run_dir_is_refused_by_the_search(tmp_path):
    config = _search_config(tmp_path)
    run_dir = tmp_path / "train"
    run_dir.mkdir()
    (run_dir / "train_config.json").write_text("{}")
    (run_dir / "model.keras").write_bytes(b"the trained model")
    before = _files(run_dir)
    with locked_run_dir(run_dir):
        for overwrite in (False, True):
            with pytest.raises(RunDirError) as refused:
                prepare_run_dir(run_dir, config, overwrite=overwrite)
            assert str(refused.value) == (
                f"{run_dir} holds a training run, not a search run; pick another --run_dir"
            )
    assert {k: v for k, v in _files(run_dir).items() if k != LOCK_NAME} == before


def test_every_name_a_run_writes_is_its_own_and_nothing_else_is(tmp_path):
    ours = {
        "search": [
            "config.json", "space.json", "latency_table.json", "latency_check.json",
            "arch.json", "arch_best1.json", "arch_best12.json", "summary.json", LOCK_NAME,
            MARKER_NAME, ".summary.json.tmp-77", ".arch.json.old-8", "ckpt/checkpoint",
            "ckpt/ckpt-12.index", "ckpt/ckpt-12.data-00000-of-00001", "ckpt/checkpoint.tmp9f0a",
            "ckpt/ckpt-9_temp/part-00000-of-00001.index", "ckpt/.checkpoint.tmp-5",
            "ckpt/unreadable/ckpt-15.index", "tensorboard/events.out.tfevents.1.host.2.0.v2",
            "archs/epoch_001.json", "archs/.epoch_002.json.tmp-4", "reports/epoch_010.json",
            "pictures/epoch_001.png",
        ],
        "train": [
            "train_config.json", "model.keras", "metrics.json", LOCK_NAME, MARKER_NAME,
            ".model.tmp-31.keras", "ckpt/epoch_001.keras", "ckpt/epoch_001.json",
            "ckpt/.epoch_002.tmp-6.keras", "ckpt/last.keras", "ckpt/progress.json",
            "ckpt/unreadable/epoch_003.keras", "tensorboard/events.out.tfevents.5.h.6.1.v2",
        ],
    }  # fmt: skip
    foreign = [
        "notes.txt", "arch_best.json", ".config.json.swp", "ckpt/mine.txt",
        "ckpt/unreadable/ckpt-15.txt", "tensorboard/run1/events.out.tfevents.1", "src/main.py",
    ]  # fmt: skip
    found_foreign = [
        "notes.txt", "arch_best.json", ".config.json.swp", "ckpt/mine.txt",
        "ckpt/unreadable/ckpt-15.txt", "tensorboard/run1/", "src/",
    ]  # fmt: skip
    # The other kind's own files are no run's of this kind.
    others = {
        "search": ["train_config.json", "model.keras", "ckpt/epoch_001.keras"],
        "train": ["config.json", "summary.json", "archs/", "ckpt/ckpt-12.index"],
    }
    for kind, names in ours.items():
        run_dir = tmp_path / kind
        for name in names + foreign + others[kind]:
            path = run_dir / name.rstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir() if name.endswith("/") else path.write_text(name)
        assert sorted(run_dirs.foreign_entries(run_dir, kind)) == sorted(
            found_foreign + others[kind]
        ), kind
        (run_dir / "link").symlink_to(run_dir / "config.json")  # a symlink is never a run's
        assert "link" in run_dirs.foreign_entries(run_dir, kind)


def test_a_finished_search_is_its_own_and_overwrite_deletes_only_what_it_wrote(tmp_path):
    run_dir = tmp_path / "run"
    config = _search_config(tmp_path)
    run_search(config, run_dir, log=lambda line: None)
    written = {p.name for p in run_dir.iterdir()}
    assert {"arch.json", "arch_best1.json", "summary.json", "space.json"} <= written
    assert {"ckpt", "tensorboard", "archs", "reports", "pictures"} <= written
    assert run_dirs.marked_kind(run_dir) == run_dirs.run_kind(run_dir) == "search"
    assert run_dirs.foreign_entries(run_dir, "search") == []
    # Written before the marker: the signature and only its own files, so still a search's.
    (run_dir / MARKER_NAME).unlink()
    assert run_dirs.run_kind(run_dir) == "search"
    other = _search_config(tmp_path, seed=4)
    with locked_run_dir(run_dir):
        assert prepare_run_dir(run_dir, config, overwrite=False) is True  # finished: reported
        assert run_dirs.marked_kind(run_dir) == "search"
        # A user's file among the checkpoints: --overwrite refuses, naming it.
        (run_dir / "ckpt" / "mine.txt").write_text("mine")
        before = _files(run_dir)
        with pytest.raises(RunDirError) as refused:
            prepare_run_dir(run_dir, other, overwrite=False)
        assert str(refused.value) == (
            f"{run_dir} holds a run with another config ({run_dir / 'config.json'}); pick "
            "another --run_dir or move ckpt/mine.txt out of it and pass --overwrite to delete it"
        )
        with pytest.raises(RunDirError) as refused:
            prepare_run_dir(run_dir, other, overwrite=True)
        assert str(refused.value) == (
            f"{run_dir} holds files no search run writes (ckpt/mine.txt); move them out of it, "
            "or use another --run_dir"
        )
        assert _files(run_dir) == before
        (run_dir / "ckpt" / "mine.txt").unlink()
        assert prepare_run_dir(run_dir, other, overwrite=True) is False
        assert sorted(p.name for p in run_dir.iterdir()) == [MARKER_NAME, LOCK_NAME, "config.json"]
