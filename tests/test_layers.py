"""The package's shape: no import cycle, no private name used across modules.

The layers themselves are ``lint-imports``'s contract in ``pyproject.toml`` (run by
``make test``); these checks read every import statement, module-level and inside
functions alike, so an import moved into a function to dodge a cycle is still seen.
"""

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph("pyro_vae")
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append(" -> ".join([importer, *back]))
    assert cycles == []


def test_a_deliberate_cycle_is_found(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other inside functions."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("def g():\n    from .a import f\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic")
    assert graph.find_shortest_chain(importer="cyclic.b", imported="cyclic.a")
    assert graph.find_shortest_chain(importer="cyclic.a", imported="cyclic.b")


def _private_imports(path: Path) -> list[str]:
    """``from X import _name`` where X is a pyro_vae module other than the file itself."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.level or "pyro_vae" in (node.module or "")):
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}"
                      for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")]
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name) \
                and node.value.id in _PROJECT_MODULE_ALIASES:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    return found


# names the tests and scripts give this package's modules (``from pyro_vae import toy``)
_PROJECT_MODULE_ALIASES = {"toy", "mixture_fit", "gmm", "experiment", "toy_plots", "plots"}


@pytest.mark.parametrize("folder", ["pyro_vae", "tests", "benchmarks", "examples"])
def test_no_private_name_is_imported_from_another_module(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    assert [hit for path in files for hit in _private_imports(path)] == []
