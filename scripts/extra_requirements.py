"""Print the dependencies of the project's extras, one per line (for a cached Docker layer).

``python scripts/extra_requirements.py serving`` prints the core dependencies plus the ``serving``
extra, expanding self-references such as ``financemath-mlops[serving]``. The Dockerfiles install
this list before they copy ``src/``, so a source change does not reinstall a gigabyte of wheels.
Reads ``pyproject.toml`` with the standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_SELF = re.compile(r"^\s*(?P<name>[A-Za-z0-9._-]+)\s*\[(?P<extras>[^\]]+)\]\s*$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    """Core dependencies plus those of ``extras`` (recursively through self-references)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    own = canonical(project["name"])
    optional = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()
    pending = list(extras)
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"unknown extra {extra!r}; pyproject.toml has {sorted(optional)}")
        seen.add(extra)
        for requirement in optional[extra]:
            match = _SELF.match(requirement)
            if match and canonical(match["name"]) == own:
                pending.extend(part.strip() for part in match["extras"].split(","))
            elif requirement not in out:
                out.append(requirement)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="+", help="extras of pyproject.toml, e.g. serving")
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
