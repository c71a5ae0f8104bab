"""Plugins: the user's own modules that register priors, likelihoods, guides, ELBOs...

A plugin is an ordinary Python module whose import registers something
(``@PRIORS.register("cauchy")`` at module level).  The command line imports

- every module named by ``pyro-vae --import MODULE`` (the current folder is searched
  first, as ``python -m`` does), and
- every entry point of the ``pyro_vae.plugins`` group of the installed packages
  (``[project.entry-points."pyro_vae.plugins"] mine = "my_package.priors"``),

before it builds its parser, so a registered name is a valid choice everywhere.  A run
records the plugins that were loaded; restoring its checkpoint without one of them is an
error that names it.  A checkpoint never causes an import by itself: a file is data.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .errors import UserError

__all__ = ["ENTRY_POINT_GROUP", "import_plugins", "loaded_plugins", "require_plugins"]

ENTRY_POINT_GROUP = "pyro_vae.plugins"

_loaded: list[str] = []  # module names, in import order, each once


def _record(module: str) -> None:
    if module not in _loaded:
        _loaded.append(module)


def import_plugins(modules: list[str] = (), use_entry_points: bool = True) -> list[str]:
    """Import ``modules`` and the ``pyro_vae.plugins`` entry points; all plugins loaded so far.

    A module that cannot be found is a :class:`UserError` naming it; an error raised while
    the module runs is the plugin's own and propagates unchanged.
    """
    if use_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            point.load()
            _record(point.module)
    here = str(Path.cwd())
    for name in modules:
        if here not in sys.path:
            sys.path.insert(0, here)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise  # the plugin imports something missing: its traceback says what
            raise UserError(
                f"--import {name}: no module {exc.name!r} on the path (give a module name, "
                "e.g. my_priors for ./my_priors.py)"
            ) from None
        _record(name)
    return loaded_plugins()


def loaded_plugins() -> list[str]:
    """The plugin modules imported so far, in order."""
    return list(_loaded)


def require_plugins(needed: list[str], what: str) -> None:
    """Raise a :class:`UserError` naming the plugins ``what`` was made with that are missing."""
    missing = [name for name in needed if name not in _loaded]
    if missing:
        flags = " ".join(f"--import {name}" for name in missing)
        raise UserError(f"{what} was made with plugin module(s) {', '.join(missing)}: "
                        f"run pyro-vae {flags} ...")
