"""Times every piece of a latency bundle on the device it runs on.

This file is copied into each bundle as ``measure.py`` and runs on its own: it
needs Python 3.8+, NumPy and ``ai-edge-litert`` (or ``tflite-runtime``), and
neither TensorFlow nor densenas-tf. On the device, in the bundle directory:

    python3 measure.py [--threads=N] [--warmup=20] [--runs=100] [--out=results.json]

Each piece (a ``.tflite`` file listed in ``manifest.json``) is run ``warmup``
times untimed, then timed ``runs`` times; its median, mean and standard
deviation in milliseconds go to ``results.json`` with the bundle's
fingerprint, this device's description and the runtime's version. Progress is
printed per piece; the file is rewritten atomically every few pieces, and a
second run with the same settings resumes where the first stopped. Bring
``results.json`` back and import it with ``tools/import_lut.py``.
"""

import argparse
import json
import os
import platform
import sys
import time

FORMAT = 1


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        sys.exit(
            "error: neither ai-edge-litert nor tflite-runtime is installed; "
            "pip install numpy ai-edge-litert"
        )


def _runtime_version(package):
    try:
        from importlib.metadata import version

        return f"{package} {version(package)}"
    except Exception:
        return package


def describe_device():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "Model")):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cpu = model or platform.processor() or platform.machine()
    return f"{cpu} ({os.cpu_count()} logical CPUs, {platform.system()})"


def write_json_atomic(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def time_piece(interpreter_class, path, threads, warmup, runs):
    import numpy as np

    interpreter = interpreter_class(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            data = rng.uniform(size=detail["shape"]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            data = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True)
            data = data.astype(dtype)
        interpreter.set_tensor(detail["index"], data)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    times = np.asarray(times)
    return {
        "median": float(np.median(times)),
        "mean": float(times.mean()),
        "std": float(times.std()),
        "count": int(runs),
    }


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Time every piece of a latency bundle.")
    parser.add_argument("--bundle", default=here, help="bundle directory (default: this one)")
    parser.add_argument("--threads", type=int, default=None, help="default: the manifest's")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", default=None, help="default: BUNDLE/results.json")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    with open(os.path.join(args.bundle, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        sys.exit(f"error: manifest format {manifest.get('format')!r}; this script reads {FORMAT}")
    threads = args.threads or manifest["threads"]
    out = args.out or os.path.join(args.bundle, "results.json")
    interpreter_class, package = _interpreter_class()
    settings = {
        "bundle_fingerprint": manifest["fingerprint"],
        "device": describe_device(),
        "runtime": _runtime_version(package),
        "threads": threads,
        "warmup": args.warmup,
        "runs": args.runs,
    }
    results = {}
    if os.path.isfile(out):
        with open(out) as f:
            previous = json.load(f)
        clashes = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
        if clashes:
            detail = ", ".join(f"{k}: file has {a!r}, asked {b!r}" for k, (a, b) in clashes.items())
            sys.exit(f"error: {out} holds results of other settings ({detail}); use another --out")
        results = previous.get("results", {})
    record = {
        "format": FORMAT,
        **settings,
        "unit": "ms",
        "python": platform.python_version(),
        "results": results,
    }
    todo = [p for p in manifest["pieces"] if p["key"] not in results]
    print(
        f"{len(manifest['pieces'])} pieces, {len(manifest['pieces']) - len(todo)} already in "
        f"{out}, {len(todo)} to time ({threads} thread(s), {args.warmup} warm-up, "
        f"{args.runs} runs each)",
        flush=True,
    )
    start = time.time()
    for i, piece in enumerate(todo, start=1):
        path = os.path.join(args.bundle, piece["file"])
        results[piece["key"]] = time_piece(interpreter_class, path, threads, args.warmup, args.runs)
        eta = (time.time() - start) / i * (len(todo) - i)
        print(
            f"[{i}/{len(todo)}] {piece['key']}: {results[piece['key']]['median']:.4f} ms "
            f"(eta {eta:.0f} s)",
            flush=True,
        )
        if i % 10 == 0:
            write_json_atomic(out, record)
    write_json_atomic(out, record)
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
