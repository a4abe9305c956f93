"""BUILD stays true: every module, binary and test file of the repository is named
in it, and each test file's py_test runs its tests."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, python_env


def _named_in_build() -> set[str]:
    return set(re.findall(r'"([\w/]+\.py)"', (ROOT / "BUILD").read_text()))


def test_every_python_file_is_named_in_build():
    named = _named_in_build()
    files = {
        str(path.relative_to(ROOT))
        for folder in ("densenas_tf", "tools", "export", "tests")
        for path in (ROOT / folder).rglob("*.py")
    }
    missing = sorted(files - named)
    assert not missing, f"add these to BUILD: {missing}"
    stale = sorted(name for name in named if not (ROOT / name).is_file())
    assert not stale, f"BUILD names files that do not exist: {stale}"


def test_every_binary_has_a_py_binary_and_every_test_a_py_test():
    text = (ROOT / "BUILD").read_text()
    binary_blocks = text[text.index("py_binary(") : text.index("py_test(")]
    binaries = set(re.findall(r'"((?:tools|export)/\w+\.py)"', binary_blocks))
    expected = {
        str(p.relative_to(ROOT)) for d in ("tools", "export") for p in (ROOT / d).glob("*.py")
    }
    assert binaries == expected
    tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")}
    test_block = text[text.index("py_test(") :]
    assert tests == set(re.findall(r'"(tests/test_\w+\.py)"', test_block))


def _py_test_command(src: str) -> list[str]:
    """The command Bazel runs (from the runfiles root, which mirrors the
    repository) for test file ``src``: its py_test's main as a script, with
    its args, as BUILD declares them."""
    text = (ROOT / "BUILD").read_text()
    block = text[text.index("py_test(") :]
    main = re.search(r"^\s*main = (.+),$", block, re.M).group(1)
    args = re.search(r"^\s*args = (\[.*\]),$", block, re.M)
    # The attributes are Starlark expressions of src, which Python evaluates alike.
    scope = {"__builtins__": {}, "src": src}
    script = eval(main, scope)
    values = eval(args.group(1), scope) if args else []
    # $(rootpath x) and $(location x) name x's path in the runfiles.
    values = [re.sub(r"\$\((?:rootpath|location) ([^)]+)\)", r"\1", v) for v in values]
    return [sys.executable, script, *values]


def _run_as_bazel_does(src: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        _py_test_command(src),
        cwd=cwd,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_test_file_run_as_its_py_test_runs_its_tests():
    src = "tests/test_optimizers.py"
    text = (ROOT / src).read_text()
    assert "parametrize" not in text  # so each test function is one test
    tests = len(re.findall(r"^def test_", text, re.M))
    result = _run_as_bazel_does(src, ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(rf"^=* ?{tests} passed\b", result.stdout, re.M), result.stdout[-3000:]


def test_a_failing_test_fails_its_py_test(tmp_path):
    # Runfiles of a py_test that holds one passing and one failing test.
    script = _py_test_command("tests/test_two.py")[1]
    if script != "tests/test_two.py":
        (tmp_path / script).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / script, tmp_path / script)
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "test_two.py").write_text(
        "def test_passes():\n    assert 1 + 1 == 2\n\n\ndef test_fails():\n    assert 1 + 1 == 3\n"
    )
    result = _run_as_bazel_does("tests/test_two.py", tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^=* ?1 failed, 1 passed\b", result.stdout, re.M), result.stdout[-3000:]
