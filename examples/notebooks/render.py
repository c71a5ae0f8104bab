"""Run the workflow notebooks and write their outputs as Markdown with PNG figures.

    .venv/bin/python examples/notebooks/render.py                  # full mode -> docs/notebooks
    .venv/bin/python examples/notebooks/render.py --smoke --out /tmp/nb toy_workflow

For each notebook ``NAME.ipynb`` this writes ``OUT/NAME.md`` (the notebook's Markdown cells,
its code, and each code cell's printed and displayed output) and ``OUT/NAME/figure-NN.png``
for every figure, in order.  Full mode is the notebook's own budgets; ``--smoke`` sets
``PYRO_VAE_SMOKE=1`` (the tests' quick mode).  Each notebook runs in a scratch folder, so
files it writes (compare tables, figures) do not land in the repository.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
_MAX_TEXT_LINES = 60  # long printed output (progress, tables) is cut to its last lines


def execute(path: Path, workdir: Path, *, smoke: bool, timeout: int = 3600):
    """The notebook at ``path`` executed in ``workdir``; raises on the first failing cell."""
    notebook = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # inline captures figures
    env["PYRO_VAE_SMOKE"] = "1" if smoke else "0"
    # tqdm's notice that the kernel has no ipywidgets (progress bars print as text instead)
    env["PYTHONWARNINGS"] = "ignore:IProgress not found"
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)
    return notebook


def _text(output) -> str | None:
    """The printable text of one output (stream, result, display or error), or None."""
    if output.output_type == "stream":
        text = output.text
    elif output.output_type in ("execute_result", "display_data"):
        if "image/png" in output.get("data", {}):
            return None
        text = output.get("data", {}).get("text/plain")
    else:
        text = "\n".join(output.get("traceback", []))
    if not text:
        return None
    text = text.replace(f"{ROOT}/", "")  # paths in warnings, relative to the repository
    lines = text.rstrip("\n").splitlines()
    if len(lines) > _MAX_TEXT_LINES:
        lines = ["..."] + lines[-_MAX_TEXT_LINES:]
    return "\n".join(lines)


def to_markdown(notebook, figures: Path) -> str:
    """Markdown of an executed notebook; its PNG outputs are written to ``figures/``."""
    figures.mkdir(parents=True, exist_ok=True)
    parts, count = [], 0
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code":
            continue
        parts.append(f"```python\n{cell.source}\n```")
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                count += 1
                name = f"figure-{count:02d}.png"
                (figures / name).write_bytes(base64.b64decode(png))
                parts.append(f"![{figures.name} figure {count}]({figures.name}/{name})")
            elif (text := _text(output)) is not None:
                parts.append(f"```text\n{text}\n```")
    return "\n\n".join(parts) + "\n"


def render(path: Path, out: Path, *, smoke: bool) -> Path:
    """Execute ``path`` and write ``out/<stem>.md`` and its figures; returns the Markdown path."""
    with tempfile.TemporaryDirectory() as scratch:
        notebook = execute(path, Path(scratch), smoke=smoke)
    markdown = out / f"{path.stem}.md"
    out.mkdir(parents=True, exist_ok=True)
    markdown.write_text(to_markdown(notebook, out / path.stem))
    return markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook stems (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "notebooks")
    parser.add_argument("--smoke", action="store_true", help="the tests' quick budgets")
    args = parser.parse_args(argv)
    known = {path.stem: path for path in NOTEBOOKS}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        print(f"unknown notebook {', '.join(unknown)}; choose from: {', '.join(known)}",
              file=sys.stderr)
        return 2
    for name in args.names or list(known):
        start = time.perf_counter()
        markdown = render(known[name], args.out, smoke=args.smoke)
        print(f"{markdown}  ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
