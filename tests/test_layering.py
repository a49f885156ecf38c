"""The import lines of DEVELOPERS.md: data flows trainer -> store -> analysis -> app, and only the control file
flows back, so app/ never imports torch or the trainer, analysis/ neither torch nor streamlit nor either side,
and trainer/ never streamlit nor app/ (it starts the dashboard as a process)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "app": {"torch", "trainer"},
    "analysis": {"torch", "streamlit", "trainer", "app"},
    "trainer": {"streamlit", "app"},
}


def imported_roots(path: Path) -> set[str]:
    """Top-level package of every import in the file, function-level ones included."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_keeps_to_its_layer(package):
    crossings = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {f: bad for f, bad in crossings.items() if bad} == {}
