"""Keep the README's generated blocks equal to the files that produced them.

A block in README.md between

    <!-- begin docs/results/NAME.md -->
    ...
    <!-- end docs/results/NAME.md -->

is the content of that file, written by a benchmark or script (each file says which in its
first line).  ``python tools/sync_readme.py`` rewrites every block from its file;
``--check`` changes nothing and exits 1 naming each block that differs from its file
(``tests/test_readme.py`` runs it, so a README number that drifts from its source fails CI).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- begin (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end (?P=path) -->)", re.S)


def blocks(readme: str) -> list[tuple[str, str]]:
    """(source path, text now in the README) for every generated block, in order."""
    return [(m["path"], m["body"]) for m in BLOCK.finditer(readme)]


def synced(readme: str, root: Path = ROOT) -> str:
    """The README with every generated block replaced by its source file's text."""
    def fill(match: re.Match) -> str:
        source = root / match["path"]
        if not source.is_file():
            raise SystemExit(f"README block names {match['path']}, which does not exist")
        return match[1] + source.read_text() + match[4]

    return BLOCK.sub(fill, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = synced(text, args.readme.parent)
    if not args.check:
        args.readme.write_text(new)
        return 0
    pairs = zip(blocks(text), blocks(new), strict=True)
    stale = [path for (path, old), (_, fresh) in pairs if old != fresh]
    for path in stale:
        print(f"README block {path} differs from the file: run python tools/sync_readme.py",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
