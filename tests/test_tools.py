"""The binaries no other test runs, run once each on a small case: tools/derive.py
on a finished search, tools/train.py's success path; what the binaries share at
their command line (flags shown and honoured, old spellings, a flag against an
--override, Ctrl-C, a checkpoint that does not exist). (tools/main_job.py runs in
tests/test_main_job.py, where it resumes the reduced main job.)"""

import json
import re

import numpy as np
import pytest
from conftest import SMALL_FASHION_NET
from helpers import made_up_table, micro_space, run_python, run_tool, write_space

from densenas_tf.space.arch_spec import ArchSpec, count_costs

# A search, a training and the binaries run on them: the slow tier only.
pytestmark = pytest.mark.slow

# Two searchable blocks on 28x28 Fashion-MNIST, two ops per layer.
SMALL_SPACE = micro_space(
    "small_tools",
    widths=[8, 12, 16],
    feature_map_sizes=[28, 14, 7],
    stages=[0, 1, 2],
    stacking_layers=[0, 1, 0],
)


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    """A finished two-epoch search of SMALL_SPACE on 320 images, against a
    made-up latency table: (run directory, its summary)."""
    from densenas_tf.search.config import SearchConfig
    from densenas_tf.search.run import run_search
    from densenas_tf.space.spaces import SearchSpace

    folder = tmp_path_factory.mktemp("search")
    space_file = write_space(folder, SMALL_SPACE, "space.yaml")
    table = made_up_table(
        SearchSpace.from_config(SMALL_SPACE),
        lambda k, key: 0.05 + 0.01 * k,
        overhead_ms=0.01,
        std_ms=0.001,
        count=10,
        versions={"tensorflow_version": "x"},
    )
    table_file = folder / "table.json"
    table_file.write_text(table.to_json())
    config = SearchConfig.from_dict(
        {
            "space": str(space_file),
            "latency_table": str(table_file),
            "data": {"train_limit": 320, "arch_fraction": 0.2},
            "batch_size": 32,
            "epochs": 2,
            "warmup_epochs": 1,
            "latency_check": False,
            "deterministic": False,
            "seed": 1,
        }
    )
    run_dir = folder / "run"
    result = run_search(config, run_dir, log=lambda line: None)
    return run_dir, result.summary


def test_derive_binary_prints_the_latest_checkpoints_arch(finished_search, tmp_path):
    run_dir, summary = finished_search
    out = tmp_path / "derived.json"
    result = run_tool("derive", f"--run_dir={run_dir}", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_text() == result.stdout
    printed = ArchSpec.from_json(result.stdout)
    searched = ArchSpec.from_json((run_dir / "arch.json").read_text())
    # Two epochs of 8 weight steps (256 images), the second after 2 architecture
    # steps (64 images): the last checkpoint is the run's end, step 18.
    steps = summary["global_steps"]
    assert steps == 18
    assert sorted(p.name for p in (run_dir / "ckpt").glob("*.index")) == [
        "ckpt-18.index",
        "ckpt-8.index",
    ]
    assert printed.name == f"step_{steps}"
    assert printed.provenance["checkpoint"] == str(run_dir / "ckpt" / f"ckpt-{steps}")
    assert (printed.provenance["epoch"], printed.provenance["global_step"]) == (2, steps)

    def arch(spec):
        return {k: v for k, v in spec.to_dict().items() if k not in ("name", "provenance")}

    # The run's arch.json was derived from the same parameters at the same step.
    assert arch(printed) == arch(searched)
    assert printed.to_block_string() == summary["block_string"]
    for key, value in printed.provenance.items():
        if key != "checkpoint":
            assert searched.provenance[key] == value, key


def test_train_binary_trains_tests_and_saves(tmp_path):
    import keras

    from densenas_tf.data.sources import load_image_data

    arch_file = tmp_path / "small.json"
    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    spec.save(arch_file)
    run_dir = tmp_path / "run"
    result = run_tool(
        "train",
        f"--arch={arch_file}",
        f"--run_dir={run_dir}",
        "--epochs=1",
        "--batch_size=32",
        "--train_limit=320",
        "--test_limit=200",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["test_images"], metrics["epochs"]) == (320, 200, 1)
    assert [h["epoch"] for h in metrics["history"]] == [1]
    cost = count_costs(spec)
    assert (metrics["params"], metrics["mult_adds"]) == (cost.params, cost.mult_adds)
    assert metrics["model"] == str(run_dir / "model.keras")
    # The test accuracy of the saved model on the same 200 test images.
    data = load_image_data("fashion_mnist", train_limit=320, test_limit=200)
    model = keras.models.load_model(run_dir / "model.keras")
    logits = model(data.test_images.astype(np.float32), training=False).numpy()
    hits = int(np.sum(logits.argmax(-1) == data.test_labels))
    assert metrics["test_accuracy"] == hits / 200
    printed = re.fullmatch(
        r"small: test accuracy (\d\.\d{4}) \(200 images\), ([\d,]+) params, "
        r"([\d.]+)M multiply-adds; model (.+)\n",
        result.stdout,
    )
    assert printed, result.stdout
    assert printed.group(1) == f"{hits / 200:.4f}"
    assert int(printed.group(2).replace(",", "")) == cost.params
    assert printed.group(3) == f"{cost.mult_adds / 1e6:.1f}"
    assert printed.group(4) == str(run_dir / "model.keras")


def test_derive_binary_refuses_a_checkpoint_that_does_not_exist(finished_search):
    run_dir, _ = finished_search
    missing = run_dir / "ckpt" / "ckpt-99"
    result = run_tool("derive", f"--run_dir={run_dir}", f"--checkpoint={missing}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    found = [str(run_dir / "ckpt" / f"ckpt-{n}") for n in (8, 18)]
    assert result.stderr.endswith(
        f"error: {missing}: no such checkpoint (no ckpt-99.index); the run's checkpoints are "
        f"{found}, or leave out --checkpoint for the latest\n"
    ), result.stderr[-2000:]


def test_ctrl_c_stops_a_binary_with_one_line_saying_where_and_how_to_resume(tmp_path):
    # Ctrl-C inside the search, after three of eight steps of a pass.
    stop = (
        "import densenas_tf.search.run as run\n"
        "from densenas_tf.core.runtime import Progress\n"
        "def interrupted(*args, **kwargs):\n"
        "    progress = Progress('epoch 2/4 weight', 8, 0)\n"
        "    for _ in range(3):\n"
        "        progress.update({})\n"
        "    raise KeyboardInterrupt\n"
        "run.run_search = interrupted\n"
    )
    result = run_python("tools/search.py", f"--run_dir={tmp_path / 'run'}", before=stop)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "interrupted in epoch 2/4 weight at step 3/8; re-running the same command resumes it"
    )


def test_search_help_shows_only_the_flags_it_honours_and_refuses_a_flag_against_an_override(
    tmp_path,
):
    shown = run_tool("search", "--help")
    flags_shown = set(re.findall(r"^  --(?:\[no\])?(\w+)", shown.stdout, re.M))
    assert {"config", "override", "seed", "latency_table", "train_limit", "image_folder"} <= (
        flags_shown
    ), shown.stdout[-3000:]
    # Data flags a search has no use for are not defined at all.
    assert not flags_shown & {"dataset", "test_fraction", "test_limit", "data_seed", "stream"}
    refused = run_tool("search", f"--run_dir={tmp_path / 'run'}", "--dataset=fashion_mnist")
    assert refused.returncode != 0 and "Unknown command line flag 'dataset'" in refused.stderr
    conflict = run_tool(
        "search",
        f"--run_dir={tmp_path / 'run'}",
        "--train_limit=1280",
        "--override=data.train_limit=640",
    )
    assert conflict.returncode == 1
    assert conflict.stderr.splitlines()[-1] == (
        "error: --train_limit and --override=data.train_limit=640 both set data.train_limit; "
        "give one of them"
    )
    assert not (tmp_path / "run").exists()


def test_train_binary_takes_recipe_and_its_old_spelling_with_a_warning(tmp_path):
    shown = run_tool("train", "--help")
    assert "--recipe:" in shown.stdout and "--num_classes:" in shown.stdout
    assert "--config:" not in shown.stdout  # the old spelling works, unlisted
    old = run_tool("train", "--arch=densenas_a", f"--run_dir={tmp_path}", "--config=no_such")
    assert old.returncode == 1
    lines = old.stderr.splitlines()
    assert "warning: --config is deprecated; use --recipe" in lines
    assert lines[-1].startswith("error: unknown training recipe 'no_such'; presets are")
    both = run_tool(
        "train", "--arch=densenas_a", f"--run_dir={tmp_path}", "--config=a", "--recipe=b"
    )
    assert both.returncode == 1 and both.stderr.splitlines()[-1] == (
        "error: --config and --recipe are one flag (--config is its old spelling); "
        "give --recipe only"
    )
    override = run_tool(
        "train",
        "--arch=densenas_a",
        f"--run_dir={tmp_path}",
        "--epochs=3",
        "--override=train.epochs=2",
    )
    assert override.returncode == 1 and override.stderr.splitlines()[-1] == (
        "error: --epochs and --override=train.epochs=2 both set train.epochs; give one of them"
    )


def test_internal_worker_flags_show_only_in_helpfull():
    short = run_tool("bench_step", "--help")
    assert "--presets" in short.stdout and "--out:" in short.stdout, short.stdout[-2000:]
    assert "--worker" not in short.stdout
    full = run_tool("bench_step", "--helpfull")
    assert "--worker:" in full.stdout and "--json_out:" in full.stdout
