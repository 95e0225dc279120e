"""Disk use of a Python environment, per installed distribution: what the serving budget counts.

Run it with the environment's own interpreter (standard library only):

    /tmp/lean/bin/python scripts/venv_sizes.py            # a table, largest first
    /tmp/lean/bin/python scripts/venv_sizes.py --json -   # JSON (tests/images/test_serving_venv.py)

A distribution's size is the disk use (``du``: allocated blocks) of the files its RECORD lists,
shared libraries and compiled bytecode included; the total is ``du -s`` of the environment's
folder (``sys.prefix``), so it also counts pip itself and anything installed without a RECORD.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _disk_use(path: Path) -> int:
    try:
        return os.lstat(path).st_blocks * 512
    except OSError:
        return 0


def distribution_sizes() -> dict[str, int]:
    """Bytes on disk per distribution (canonical name), for the running interpreter."""
    sizes: dict[str, int] = {}
    for dist in importlib.metadata.distributions():
        name = canonical(dist.metadata["Name"] or "unknown")
        sizes[name] = sizes.get(name, 0) + sum(
            _disk_use(Path(str(dist.locate_file(f)))) for f in dist.files or ()
        )
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def environment_size(root: Path) -> int:
    """``du -s`` of ``root``: every file's and folder's allocated blocks, links not followed."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        total += _disk_use(Path(folder))
        total += sum(_disk_use(Path(folder) / name) for name in files)
    return total


def report() -> dict:
    sizes = distribution_sizes()
    return {
        "prefix": sys.prefix,
        "python": sys.version.split()[0],
        "total_bytes": environment_size(Path(sys.prefix)),
        "distributions": sizes,
        "count": len(sizes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="write JSON to FILE ('-': stdout)")
    parser.add_argument("--top", type=int, default=25, help="rows of the table (default: 25)")
    args = parser.parse_args(argv)
    data = report()
    if args.json == "-":
        print(json.dumps(data, indent=2))
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"{'distribution':<32} {'MB':>8}")
    for name, size in list(data["distributions"].items())[: args.top]:
        print(f"{name:<32} {size / 1e6:8.1f}")
    print(
        f"{'(' + str(data['count']) + ' distributions) total du':<32} {data['total_bytes'] / 1e6:8.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
