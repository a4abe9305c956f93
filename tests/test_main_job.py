"""The main job end to end on a reduced schedule: every artefact exists and the
final table's figures are what its files give; a second run, by the binary,
resumes and redoes nothing."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, keras_accuracy, python_env, table_prediction_ms

from densenas_tf.exporting import export as exporting
from densenas_tf.latency.table import default_table_path
from densenas_tf.main_job import format_report, run_main_job
from densenas_tf.space.arch_spec import ArchSpec, count_costs

# The main job end to end, minutes: the slow tier only.
pytestmark = pytest.mark.slow

REDUCED = (
    "data.train_limit=640",
    "batch_size=64",
    "epochs=2",
    "warmup_epochs=1",
    "latency_check=false",  # the shipped table; the main job's own is measured by default
    "deterministic=false",  # op determinism is process-wide: tested in its own processes
    "graph_steps=false",  # a few dozen steps: eager steps trace in a fraction of the time
)


def tflite_accuracy(model_file: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of a .tflite classifier run by the LiteRT interpreter on
    the pixels, in batches of 100."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_file), num_threads=1)
    given, logits = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if given["dtype"] != np.float32:  # int8: pixels 0-255 taken as they are
        assert given["dtype"] == np.uint8 and given["quantization"] == (1.0, 0), given
    assert len(images) % 100 == 0
    interpreter.resize_tensor_input(given["index"], [100, *images.shape[1:]])
    interpreter.allocate_tensors()
    hits = 0
    for i in range(0, len(images), 100):
        interpreter.set_tensor(given["index"], images[i : i + 100].astype(given["dtype"]))
        interpreter.invoke()
        # A quantised output's scale is positive: the argmax is the logits'.
        top = interpreter.get_tensor(logits["index"]).argmax(-1)
        hits += int(np.sum(top == labels[i : i + 100]))
    return hits / len(labels)


def test_reduced_main_job(tmp_path, monkeypatch):
    from densenas_tf.data.sources import load_image_data
    from densenas_tf.latency.measure import timed_runs

    # Two epochs on 4,000 images leave near-tied logits, where int8 rounding
    # flips a few more top-1 answers than the exporter's 98 % criterion allows
    # (tests/test_export.py holds a better-trained net to 98 %); here the
    # pipeline is under test, so its int8 check is held to 90 %.
    monkeypatch.setattr(exporting, "INT8_MIN_AGREEMENT", 0.9)
    run_dir = tmp_path / "main"
    table_file = default_table_path("fashion_mnist")
    kwargs = dict(
        search_overrides=REDUCED,
        train_epochs=2,
        train_limit=4000,
        test_limit=1000,
        latency_runs=5,
        latency_table=str(table_file),
        log=lambda line: None,
    )
    report = run_main_job(run_dir, **kwargs)
    artefacts = report["artefacts"]
    for key in ("arch", "keras_model", "float_tflite", "int8_tflite"):
        assert Path(artefacts[key]).is_file(), key
    # TensorFlow Serving's layout: version 1 of export/serving, with warm-up requests.
    assert Path(artefacts["saved_model"]) == run_dir / "export" / "serving" / "1"
    assert (Path(artefacts["saved_model"]) / "saved_model.pb").is_file()
    assert (
        Path(artefacts["saved_model"]) / "assets.extra" / "tf_serving_warmup_requests"
    ).is_file()
    spec = ArchSpec.from_json(Path(artefacts["arch"]).read_text())
    assert report["arch"] == spec.to_block_string()
    cost = count_costs(spec)
    assert (report["params"], report["mult_adds"]) == (cost.params, cost.mult_adds)
    assert report["float_tflite_bytes"] == Path(artefacts["float_tflite"]).stat().st_size
    assert report["int8_tflite_bytes"] == Path(artefacts["int8_tflite"]).stat().st_size
    assert report["int8_tflite_bytes"] < report["float_tflite_bytes"] / 2

    # The accuracies are the saved files' on the run's test images.
    data = load_image_data("fashion_mnist", train_limit=4000, test_limit=1000)
    images, labels = data.test_images, data.test_labels
    assert report["test_images"] == len(labels) == 1000
    metrics = json.loads((run_dir / "train" / "metrics.json").read_text())
    assert report["keras_test_accuracy"] == metrics["test_accuracy"]
    assert report["keras_test_accuracy"] == keras_accuracy(artefacts["keras_model"], images, labels)
    float_accuracy = tflite_accuracy(artefacts["float_tflite"], images, labels)
    assert report["float_tflite_test_accuracy"] == float_accuracy
    assert abs(report["float_tflite_test_accuracy"] - report["keras_test_accuracy"]) < 1e-9
    assert report["int8_test_accuracy"] == tflite_accuracy(artefacts["int8_tflite"], images, labels)
    int8_check = json.loads((run_dir / "export" / "model_int8.json").read_text())
    assert report["int8_top1_agreement"] == int8_check["top1_agreement"] >= 0.9

    # The predicted latency is the given table's for the derived net; the
    # measured ones are measured.json's.
    assert report["latency_table"] == str(table_file)
    predicted = report["predicted_latency_ms"]
    assert predicted == pytest.approx(table_prediction_ms(spec, table_file), rel=1e-12)
    measured = json.loads((run_dir / "export" / "measured.json").read_text())
    assert report["measured_latency_ms"] == measured["none"]["latency_ms"]
    # Each figure is the least of its interleaved round medians; MobileNetV2
    # x0.75, which gave the budget, was timed in the same rounds.
    from densenas_tf.main_job import MEASURE_ROUNDS

    for name in ("none", "int8", "budget_net"):
        rounds = measured[name]["round_medians_ms"]
        assert len(rounds) == MEASURE_ROUNDS and measured[name]["latency_ms"] == min(rounds)
    assert report["budget_net_measured_ms"] == measured["budget_net"]["latency_ms"]
    from densenas_tf.space.baselines import mobilenet_v2_fashion

    assert measured["budget_net"]["arch"] == mobilenet_v2_fashion(0.75).to_block_string()
    assert report["measured_int8_latency_ms"] == measured["int8"]["latency_ms"]
    # The int8 net's predicted latency: the shipped int8 table's for the net.
    int8_file = default_table_path("fashion_mnist", quantization="int8")
    assert report["int8_latency_table"] == str(int8_file)
    assert report["predicted_int8_latency_ms"] == pytest.approx(
        table_prediction_ms(spec, int8_file), rel=1e-12
    )
    # Against the float file timed here: the fastest of 50 runs, which other
    # processes can delay but not speed up. The shipped table was measured on
    # this kind of machine, unloaded; under the load tests share the machine
    # with, a net runs here in up to about twice its prediction (the full main
    # job's net: 0.16 ms predicted, 0.22-0.34 ms measured), and on a machine of
    # the same name with AVX-512 in about 0.6x it (1.76x measured as the ratio
    # below). A prediction from other pieces (that net without its stacking
    # ops: 0.06 ms; the table's every entry: 16 ms) or in other units falls
    # outside [0.35, 3] of it.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=artefacts["float_tflite"], num_threads=1)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]
    interpreter.set_tensor(given["index"], images[:1].astype(np.float32))
    fastest_ms = 1e3 * min(timed_runs(interpreter.invoke, warmup=20, runs=50))
    assert 0.35 <= predicted / fastest_ms <= 3, (predicted, fastest_ms)
    # The job's median of 5 runs against the fastest of 50 here: a window of
    # 0.4 to 5 (12.5x wide). A wrong unit (seconds or microseconds taken for
    # ms) is off by 1000x, far outside it. Below: 60 % spared, the two are
    # timed at different moments while another test worker shares the two
    # cores (a fresh-clone run of the suite saw 0.58 on 2026-12-01). Above: a
    # median of a loaded moment runs up to about twice the fastest (the table
    # note above: 0.16 ms predicted, up to 0.34 ms measured), 5 leaves over
    # twice that for a busier machine.
    assert 0.4 <= report["measured_latency_ms"] / fastest_ms <= 5, fastest_ms

    # The search aimed at the default budget, MobileNetV2 x0.75 measured at the
    # job's start: the derived net predicts at most that.
    budget = json.loads((run_dir / "latency" / "budget.json").read_text())
    assert report["budget_ms"] == budget["target_ms"] > 0
    assert report["budget_source"].startswith("mobilenet_v2_x0.75 measured here")
    assert predicted <= report["budget_ms"] + 1e-9
    summary = json.loads((run_dir / "search" / "summary.json").read_text())
    assert summary["budget"]["target_ms"] == report["budget_ms"]
    assert summary["budget"]["predicted_ms"] == pytest.approx(predicted, rel=1e-12)
    search_config = json.loads((run_dir / "search" / "config.json").read_text())
    assert search_config["objective"]["kind"] == "budget"
    assert report["warmup_end"] == summary["warmup_end"]
    assert report["warmup_end"]["warmup_epochs"] == 1
    assert report["path_margin"] == summary["path_margin"]
    assert json.loads((run_dir / "report.json").read_text()) == report
    table = (run_dir / "report.md").read_text()
    assert table.strip() == format_report(report)
    assert spec.to_block_string().replace("|", "\\|") in table

    # The binary, with the same settings, resumes: every stage is found done,
    # no file but the report is written, and the report is the first's.
    def files():
        return {
            str(p.relative_to(run_dir)): p.stat().st_mtime_ns
            for p in run_dir.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.parent != run_dir
        }

    before = files()
    command = [
        sys.executable,
        str(ROOT / "tools" / "main_job.py"),
        f"--run_dir={run_dir}",
        *(f"--override={override}" for override in REDUCED),
        "--train_epochs=2",
        "--train_limit=4000",
        "--test_limit=1000",
        "--latency_runs=5",
        f"--latency_table={table_file}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=python_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert files() == before
    again = json.loads((run_dir / "report.json").read_text())
    assert (
        result.stdout.strip() == format_report(again) == (run_dir / "report.md").read_text().strip()
    )
    times = ("stage_times_s", "this_run_wall_time_s")
    assert {k: v for k, v in again.items() if k not in times} == {
        k: v for k, v in report.items() if k not in times
    }
