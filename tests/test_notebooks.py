"""The notebooks' stored outputs come from the committed code, and they use only the public API.

Executing them is the job of `pytest --nbmake` (the README's test command); this checks what
execution cannot: that the outputs committed beside the code were produced by that code
(scripts/run_notebooks.py stamps a fingerprint of the code cells and the package sources).
"""
import ast
import importlib.util
import os

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".ipynb"))


def _runner():
    spec = importlib.util.spec_from_file_location(
        "run_notebooks", os.path.join(ROOT, "scripts", "run_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name):
    return nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_outputs_come_from_the_committed_code(name):
    runner = _runner()
    nb = _read(name)
    stamped = nb.metadata.get(runner.FINGERPRINT_KEY)
    assert stamped is not None, f"{name} was not executed by scripts/run_notebooks.py"
    assert stamped == runner.fingerprint(nb), (
        f"{name}: its outputs are older than its code or the package's; run "
        f"`python scripts/run_notebooks.py notebooks/{name}` and commit the result")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("outputs") is not None for c in code)
    assert any(o.get("output_type") == "display_data" for c in code for o in c.outputs), (
        f"{name} has no stored figure")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_uses_only_the_public_api(name):
    """No private name (a leading underscore) of minigemma is imported or reached."""
    for cell in _read(name).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minigemma"):
                assert not any(part.startswith("_") for part in node.module.split(".")), node.module
                assert not any(a.name.startswith("_") for a in node.names), ast.unparse(node)
            if isinstance(node, ast.Attribute):
                assert not (node.attr.startswith("_") and not node.attr.startswith("__")), (
                    f"{name}: reaches a private attribute: {ast.unparse(node)}")
