"""BUILD stays true: every module, binary and test file of the repository is named in it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
