"""The package's layer contract, read from the code's own imports.

Each sub-package of ``densenas_tf`` sits on a layer (its ``__init__``
docstring says which): a module may import its own sub-package and the layers
below it, never a layer above nor a sibling on its own layer. Package imports
stand at the top of a module, where they show the real order. Nothing in the
library imports ``cli``, ``main_job`` or ``experiments``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "densenas_tf"

# Sub-package (or top-level module) -> layer. Higher layers may import lower ones.
LAYERS = {
    "core": 0,
    "space": 1,
    "data": 1,
    "nn": 2,
    "exporting": 2,
    "latency": 3,
    "search": 4,
    "train": 4,
    "evaluation": 4,
    "main_job": 5,
    "experiments": 5,
    "cli": 6,
    "commands": 7,
}


def area(module: str) -> str | None:
    """The sub-package (or top-level module) a dotted ``densenas_tf`` name is in."""
    parts = module.split(".")
    if parts[0] != "densenas_tf":
        return None
    return parts[1] if len(parts) > 1 else ""


def package_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported densenas_tf module, at the module's top level) for one file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "densenas_tf":
                names = [f"densenas_tf.{a.name}" for a in node.names]
            elif node.module.startswith("densenas_tf."):
                names = [node.module]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("densenas_tf.")]
        else:
            continue
        found += [(node.lineno, name, id(node) in top) for name in names]
    return found


def module_area(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def violations(package: Path = PACKAGE) -> list[str]:
    """Every import in the package that breaks the contract, as ``file:line: why``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        here = module_area(path, package)
        if here == "__init__":
            continue
        assert here in LAYERS, f"{path}: area {here!r} has no layer in LAYERS; give it one"
        for line, name, at_top in package_imports(path):
            where = f"{path.relative_to(package.parent)}:{line}"
            there = area(name)
            if not at_top:
                found.append(f"{where}: {name} imported inside a function; import it at the top")
            if there in ("", here):
                continue
            if there not in LAYERS:
                found.append(f"{where}: {name} is in no known area")
            elif LAYERS[there] >= LAYERS[here]:
                found.append(
                    f"{where}: {here} (layer {LAYERS[here]}) imports {name} "
                    f"(layer {LAYERS[there]}): an import may only run down the layers"
                )
    return found


def test_every_import_runs_down_the_layers():
    assert violations() == []


def test_every_area_is_a_documented_package_with_its_layer():
    for name, layer in LAYERS.items():
        if (PACKAGE / f"{name}.py").is_file():
            continue
        init = PACKAGE / name / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and f"Layer {layer}" in doc, f"{init} must say it is on layer {layer}"
    areas = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    areas |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert areas == set(LAYERS)


@pytest.mark.parametrize(
    ("area_name", "planted", "why"),
    [
        ("space", "from densenas_tf.nn.supernet import SuperNet\n", "may only run down"),
        ("search", "from densenas_tf.train.trainer import train\n", "may only run down"),
        ("latency", "from densenas_tf import cli\n", "may only run down"),
        ("nn", "def f():\n    from densenas_tf.space import ops\n", "inside a function"),
    ],
)
def test_a_planted_import_that_breaks_the_contract_is_found(tmp_path, area_name, planted, why):
    copy = tmp_path / "densenas_tf"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (copy / area_name / "planted.py").write_text(planted)
    found = violations(copy)
    assert len(found) == 1 and why in found[0] and "planted.py:" in found[0], found
