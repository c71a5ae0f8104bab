"""``report.html``: one self-contained page per run folder, for a person with a browser.

The page holds the run's headline numbers and every scalar of ``metrics.json`` as a table,
its config (``config.toml``), the tables it wrote (``*.md``) and its figures (``*.png``)
embedded as ``data:`` URIs: no script, no style sheet, font or image fetched from anywhere,
so the file can be mailed, archived or opened offline and shows the same.
"""

from __future__ import annotations

import base64
import html
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["HEADLINE", "flat_items", "render_report"]

# the numbers a reader looks for first, where a run has them (in this order)
HEADLINE = (
    "test_elbo",
    "test_log_likelihood",
    "num_particles",
    "active_units",
    "log_likelihood",
    "elbo",
    "best_components",
    "test_log_likelihood_per_point",
    "seconds",
)
MAX_LIST = 8  # longer lists (per-epoch curves) are shown by their length and last value

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.number { text-align: right; font-family: monospace; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
img { max-width: 32em; border: 1px solid #ddd; }
"""


def flat_items(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The leaves of a nested dict as (dotted key, value); lists longer than MAX_LIST are
    summarized as ``"<n> values, last <x>"``."""
    if isinstance(value, dict):
        return [item for key, sub in value.items()
                for item in flat_items(sub, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(value, list | tuple) and len(value) > MAX_LIST:
        return [(prefix, f"{len(value)} values, last {_text(value[-1])}")]
    return [(prefix, value)]


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "n/a"
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value)
    return str(value)


def _rows(items: list[tuple[str, Any]]) -> str:
    def cell(value: Any) -> str:
        kind = ' class="number"' if isinstance(value, int | float) and not isinstance(
            value, bool) else ""
        return f"<td{kind}>{html.escape(_text(value))}</td>"

    return "\n".join(f"<tr><th>{html.escape(key)}</th>{cell(value)}</tr>" for key, value in items)


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
            f"<figcaption>{name}</figcaption></figure>")


def render_report(folder: Path, metrics: dict[str, Any], title: str | None = None) -> str:
    """The page for the run in ``folder`` whose metrics are ``metrics`` (``title``: by default
    "pyro-vae run <folder name>")."""
    title = title or f"pyro-vae run {folder.name}"
    try:
        made_by = f"pyro-vae {version('pyro-vae')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        made_by = "pyro-vae"
    headline = [(key, metrics[key]) for key in HEADLINE if key in metrics]
    every = [(key, value) for key, value in flat_items(metrics) if key != "config"
             and not key.startswith("config.")]
    config = folder / "config.toml"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(made_by)}, {time.strftime('%Y-%m-%d %H:%M')}; folder "
        f"<code>{html.escape(str(folder))}</code>"
        + (f"; run <code>{html.escape(str(metrics['run_id']))}</code>"
           if "run_id" in metrics else "") + "</p>",
    ]
    if headline:
        parts += ["<h2>Headline</h2>", f"<table>{_rows(headline)}</table>"]
    parts += ["<h2>Figures</h2>", *(_figure(path) for path in sorted(folder.glob("*.png")))]
    for table in sorted(folder.glob("*.md")):
        parts += [f"<h2>{html.escape(table.name)}</h2>",
                  f"<pre>{html.escape(table.read_text())}</pre>"]
    if config.is_file():
        parts += ["<h2>Config</h2>", f"<pre>{html.escape(config.read_text())}</pre>"]
    parts += ["<h2>Every metric</h2>", f"<table>{_rows(every)}</table>", "</body></html>", ""]
    return "\n".join(parts)
