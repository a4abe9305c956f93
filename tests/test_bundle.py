"""Latency bundles: pieces out to another device, timings back in as a table."""

import json
import math
import subprocess
import sys

import pytest
from helpers import ROOT, run_tool

from densenas_tf.latency import bundle
from densenas_tf.latency.table import LatencyTable, space_keys
from densenas_tf.space.arch_spec import ArchSpec
from densenas_tf.space.spaces import SearchSpace, load_space


def two_op_space() -> SearchSpace:
    config = load_space("tiny").to_config()
    config["name"] = "tiny_bundle"
    config["head_ops"] = ["mbconv_k3_e3"]
    config["stacking_ops"] = ["mbconv_k3_e3", "skip"]
    return SearchSpace.from_config(config)


def fake_bundle(folder, space) -> dict:
    """A manifest as write_bundle writes it, without converting any piece."""
    keys = [bundle.OVERHEAD_KEY, *space_keys(space).all_keys()]
    manifest = {
        "format": bundle.FORMAT,
        "space": space.name,
        "space_fingerprint": space.fingerprint(),
        "space_config": space.to_config(),
        "backend": "tflite",
        "threads": 1,
        "batch_size": 1,
        "quantization": "none",
        "pieces": [
            {"key": k, "file": f"pieces/{i:04d}.tflite", "input_shape": [1], "sha256": str(i)}
            for i, k in enumerate(keys)
        ],
    }
    manifest["fingerprint"] = bundle._fingerprint(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def results_of(manifest, ms=lambda i: 0.01 * (1 + i % 4), **extra) -> dict:
    return {
        "bundle_fingerprint": manifest["fingerprint"],
        "unit": "ms",
        "runtime": "ai-edge-litert 0.0",
        "threads": 1,
        "results": {
            p["key"]: {"median": ms(i), "mean": ms(i), "std": 0.001, "count": 100}
            for i, p in enumerate(manifest["pieces"])
        },
        **extra,
    }


def test_results_come_back_as_a_table_of_the_named_device(tmp_path):
    space = two_op_space()
    manifest = fake_bundle(tmp_path, space)
    (tmp_path / "results.json").write_text(json.dumps(results_of(manifest, unit="us")))
    table = bundle.import_results(tmp_path, tmp_path / "results.json", " Pixel 7 ")
    table.check_space(space)
    assert table.provenance["device"] == "Pixel 7"
    assert table.provenance["bundle_fingerprint"] == manifest["fingerprint"]
    assert table.provenance["runtime"] == "ai-edge-litert 0.0"
    assert set(table.entries) == set(space_keys(space).all_keys())
    assert table.overhead_ms == pytest.approx(0.01e-3)  # piece 0, in us
    first = manifest["pieces"][1]["key"]
    assert table.entries[first].median_ms == pytest.approx(0.02e-3)
    # A table like any other: saved, loaded, predicting.
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").entries == table.entries


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(bundle_fingerprint="0" * 16), "was timed from another bundle"),
        (lambda r: r["results"].pop(sorted(r["results"])[2]), "lacks 1 of the bundle's"),
        (lambda r: r.update(unit="ns"), "unit 'ns' is not one this import knows"),
        (lambda r: r.update(unit=None), "unit None is not one this import knows"),
        (lambda r: r["results"][sorted(r["results"])[1]].update(median=-0.2), "not positive"),
        (lambda r: r["results"][sorted(r["results"])[1]].update(median=0), "not positive"),
        (lambda r: r["results"][sorted(r["results"])[1]].update(mean=math.nan), "is NaN"),
        (lambda r: r["results"][sorted(r["results"])[1]].update(median="fast"), "not a number"),
        (lambda r: r["results"][sorted(r["results"])[1]].update(median=True), "not a number"),
        (lambda r: r["results"].update({sorted(r["results"])[1]: 0.3}), "not its timings"),
    ],
)
def test_bad_results_are_refused_naming_what_is_wrong(tmp_path, edit, message):
    space = two_op_space()
    manifest = fake_bundle(tmp_path, space)
    results = results_of(manifest)
    edit(results)
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(bundle.BundleError, match=message) as refused:
        bundle.import_results(tmp_path, tmp_path / "results.json", "Pixel 7")
    if "lacks" in message:  # the missing piece is named
        missing = set(results_of(manifest)["results"]) - set(results["results"])
        assert missing.pop() in str(refused.value)
    if "positive" in message or "number" in message or "NaN" in message:
        assert sorted(results["results"])[1] in str(refused.value)


BENCHMARK_LOG = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [1]
Graph: [/data/local/tmp/densenas_bundle/pieces/{file}]
#threads used for CPU inference: [1]
Loaded model /data/local/tmp/densenas_bundle/pieces/{file}
INFO: Initialized TensorFlow Lite runtime.
The input model file size (MB): 0.011983
Initialized session in 20.283ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=2 first=339 curr=266 min=266 max=339 avg=302.5 std=36
Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=100 first=266 curr=266 min=265 max=268 avg={avg} std=4
Inference timings in us: Init: 20283, First inference: 339, Warmup (avg): 302.5, Inference (avg): {avg}
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE
"""


def test_benchmark_model_output_is_read_in_microseconds(tmp_path):
    """android.sh's log: one benchmark_model run per piece; 'Inference (avg)'
    in us becomes each entry (its mean standing for the median), the last
    count line gives the runs and the spread."""
    space = two_op_space()
    manifest = fake_bundle(tmp_path, space)
    log = "".join(
        BENCHMARK_LOG.format(file=p["file"].split("/")[1], avg=100 + 10 * i)
        for i, p in enumerate(manifest["pieces"])
    )
    (tmp_path / "benchmark_model.log").write_text(log)
    table = bundle.import_results(tmp_path, tmp_path / "benchmark_model.log", "Pixel 7")
    assert table.provenance["runtime"] == "benchmark_model"
    assert table.overhead_ms == pytest.approx(0.100)
    key = manifest["pieces"][3]["key"]
    assert table.entries[key].median_ms == pytest.approx(0.130)
    assert table.entries[key].std_ms == pytest.approx(0.004) and table.entries[key].count == 100
    # The pushed script runs exactly these files with the manifest's threads.
    script = bundle.android_script(manifest)
    for piece in manifest["pieces"]:
        assert f"--graph={bundle.DEVICE_DIR}/{piece['file']} --num_threads=1" in script
    # A log of graphs not in the bundle, a log without timings, another unit.
    stranger = BENCHMARK_LOG.format(file="9999.tflite", avg=5)
    for text, message in [
        (log + stranger, "not in"),
        ("nothing here\n", "no 'Inference timings in us"),
        (log.replace("timings in us", "timings in ns"), "unit 'ns'"),
        (log.replace("Graph: [", "Graf: ["), "before any 'Graph"),
    ]:
        (tmp_path / "other.log").write_text(text)
        with pytest.raises(bundle.BundleError, match=message):
            bundle.import_results(tmp_path, tmp_path / "other.log", "Pixel 7")


def test_a_bundle_is_not_a_manifest_of_other_settings_and_needs_a_device(tmp_path):
    space = two_op_space()
    manifest = fake_bundle(tmp_path, space)
    (tmp_path / "results.json").write_text(json.dumps(results_of(manifest)))
    with pytest.raises(bundle.BundleError, match="--device is empty"):
        bundle.import_results(tmp_path, tmp_path / "results.json", "  ")
    with pytest.raises(bundle.BundleError, match=r"no manifest\.json"):
        bundle.import_results(tmp_path / "nowhere", tmp_path / "results.json", "Pixel 7")
    with pytest.raises(bundle.BundleError, match="holds a bundle of other settings"):
        bundle.write_bundle(space, tmp_path, threads=4, log=lambda line: None)


# Run as the device would: TensorFlow, Keras and densenas-tf cannot be imported.
NO_TENSORFLOW = (
    "import sys, runpy\n"
    "for name in ('tensorflow', 'keras', 'densenas_tf', 'tf_keras'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.mark.slow
def test_a_bundle_round_trip_gives_the_table_build_lut_measures(tmp_path):
    """tools/build_lut.py --bundle, measure.py run without TensorFlow (it
    resumes, and refuses other settings), tools/import_lut.py: the table has
    the keys of a direct build_lut run, and each figure is near it (both timed
    here; a generous bound, for a machine that other tests share)."""
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(two_op_space().to_config()))
    out = tmp_path / "bundle"
    made = run_tool("build_lut", f"--space={space_file}", f"--bundle={out}")
    assert made.returncode == 0, made.stderr[-2000:]
    assert "measure.py" in made.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    nets = [p for p in manifest["pieces"] if p["key"].startswith(bundle.NET_PREFIX)]
    assert len(nets) == 5 and all("arch" in p for p in nets)  # --bundle_nets's default
    assert len(manifest["pieces"]) == 1 + len(space_keys(two_op_space()).all_keys()) + 5
    assert all((out / p["file"]).is_file() for p in manifest["pieces"])
    runner = [sys.executable, "-c", NO_TENSORFLOW, str(out / "measure.py")]
    done = subprocess.run(
        [*runner, "--warmup=5", "--runs=30"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    n = len(manifest["pieces"])
    assert f"[{n}/{n}]" in done.stdout
    again = subprocess.run(
        [*runner, "--warmup=5", "--runs=30"], capture_output=True, text=True, timeout=600
    )
    assert (
        again.returncode == 0 and f"{n} already in" in again.stdout and "0 to time" in again.stdout
    )
    other = subprocess.run(
        [*runner, "--warmup=5", "--runs=31"], capture_output=True, text=True, timeout=600
    )
    assert other.returncode != 0 and "runs: file has 30, asked 31" in other.stderr
    imported = run_tool(
        "import_lut", f"--bundle={out}", f"--results={out / 'results.json'}", "--device=this box"
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert "this box" in imported.stdout
    table = LatencyTable.load(out / "latency_table.json")
    table.check_space(two_op_space())
    assert not any(k.startswith(bundle.NET_PREFIX) for k in table.entries)
    check = table.provenance["device_check"]
    timed = json.loads((out / "results.json").read_text())["results"]
    for piece, row in zip(nets, check["rows"]):
        spec = ArchSpec.from_dict(piece["arch"])
        assert row["predicted_ms"] == pytest.approx(table.predicted_ms(spec))
        assert row["measured_ms"] == timed[piece["key"]]["median"]
    assert check["nets"] == 5 and f"{check['mape_percent']:.1f} % mean error" in imported.stdout
    direct_file = tmp_path / "direct.json"
    run_tool(
        "build_lut", f"--space={space_file}", "--warmup=5", "--runs=30", f"--out={direct_file}"
    )
    direct = LatencyTable.load(direct_file)
    assert set(table.entries) == set(direct.entries)
    ratios = sorted(
        table.entries[k].median_ms / direct.entries[k].median_ms for k in direct.entries
    )
    assert 0.5 <= ratios[len(ratios) // 2] <= 2.0, ratios
    # Another bundle's results, through the tool: one line, no traceback.
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps({**json.loads((out / "results.json").read_text()),
                                    "bundle_fingerprint": "f" * 16}))  # fmt: skip
    refused = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_lut.py"), f"--bundle={out}",
         f"--results={stranger}", "--device=x"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0 and "was timed from another bundle" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_two_tables_are_compared_entry_by_entry():
    from helpers import made_up_table

    from densenas_tf.latency.report import compare_tables, format_comparison

    space = two_op_space()
    a = made_up_table(space, lambda k, key: 0.01 * (1 + k % 3), overhead_ms=0.002, device="a")
    b = made_up_table(space, lambda k, key: 0.02 * (1 + k % 3), overhead_ms=0.001, device="b")
    far = sorted(b.entries)[0]
    b.entries[far] = type(b.entries[far])(1.0, 1.0, 0.0, 1)
    del a.entries[sorted(a.entries)[-1]]
    c = compare_tables(a, b)
    assert c["ratio_quantiles"]["median"] == pytest.approx(0.5)
    assert c["overhead_ratio"] == pytest.approx(2.0)
    assert c["farthest"][0][0] == far and c["shared"] == len(b.entries) - 1
    assert c["only_in_other"] == [sorted(b.entries)[-1]] and c["only_in_table"] == []
    assert sum(v["entries"] for v in c["by_kind"].values()) == c["shared"]
    assert c["by_kind"]["mbconv_k3_e3"]["median"] == pytest.approx(0.5)
    text = format_comparison(c)
    assert "a against b" in text and "median 0.500" in text and "only in other: 1" in text


@pytest.mark.slow
def test_an_int8_bundle_carries_int8_pieces_and_its_import_is_an_int8_table(tmp_path):
    space = two_op_space()
    manifest = bundle.write_bundle(
        space, tmp_path, nets=1, quantization="int8", log=lambda line: None
    )
    dtypes = {p["key"]: p["input_dtype"] for p in manifest["pieces"]}
    assert {d for k, d in dtypes.items() if k.startswith(("stem", bundle.NET_PREFIX))} == {"uint8"}
    assert {d for k, d in dtypes.items() if not k.startswith(("stem", bundle.NET_PREFIX))} == {
        "int8"
    }
    done = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, str(tmp_path / "measure.py"), "--runs=5"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = bundle.import_results(tmp_path, tmp_path / "results.json", "this box")
    assert table.provenance["quantization"] == "int8" and table.provenance["device_check"]
    with pytest.raises(bundle.BundleError, match="quantization 'int8'"):
        bundle.write_bundle(space, tmp_path, nets=1, log=lambda line: None)
