"""Every notebook in examples/notebooks runs top to bottom, and renders to Markdown + figures.

The notebooks read ``PYRO_VAE_SMOKE=1`` to shrink their budgets; the full runs (rendered
to docs/notebooks by ``examples/notebooks/render.py``) are the same code with bigger numbers.
"""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("nbformat")

RENDER = Path(__file__).parents[1] / "examples" / "notebooks" / "render.py"
_spec = importlib.util.spec_from_file_location("render", RENDER)
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


@pytest.mark.parametrize("path", render.NOTEBOOKS, ids=[p.stem for p in render.NOTEBOOKS])
def test_notebook_executes_and_renders(path, tmp_path):
    markdown = render.render(path, tmp_path, smoke=True)
    text = markdown.read_text()
    figures = sorted((tmp_path / path.stem).glob("figure-*.png"))
    assert figures, "every notebook tells its story with at least one figure"
    assert text.count("](" + path.stem + "/figure-") == len(figures)
    assert "Traceback" not in text


def test_render_rejects_unknown_names(capsys):
    assert render.main(["no_such_notebook", "--smoke"]) == 2
    assert "unknown notebook no_such_notebook" in capsys.readouterr().err
