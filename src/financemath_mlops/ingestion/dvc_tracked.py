"""The DVC version of a local input file, read from the `.dvc` pointer that tracks it.

Ingestion records it as the data revision (`dvc:<md5>`, or `dvc:<dir md5>:<path in dir>` for a
file inside a tracked folder such as `data/raw`), so every MLflow run names the exact snapshot
it was trained on. Pure file reading: DVC itself is not a dependency, and an untracked file (the
sample, a file outside the repository) simply has no DVC version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

MAX_DEPTH = 32  # parent folders searched for a tracking `.dvc` file
MAX_POINTER_BYTES = 1 << 20  # a `.dvc` file is a few lines; a `.dir` listing one line per file
MAX_LISTING_BYTES = 64 << 20


def dvc_revision(path: Path | str) -> str | None:
    """`dvc:<md5>` when a `.dvc` file tracks `path` (itself or a parent folder) and the file's
    bytes are the tracked ones; None when untracked or modified since `dvc add` (logged)."""
    target = Path(path).resolve()
    if not target.is_file():
        return None
    for depth, tracked in enumerate([target, *target.parents]):
        if depth > MAX_DEPTH or not tracked.name:
            break
        pointer = tracked.with_name(tracked.name + ".dvc")
        out = _out_for(pointer, tracked.name)
        if out is not None:
            return _checked(target, tracked, pointer, out)
        if (tracked / ".dvc").is_dir():  # the DVC repository root: nothing above tracks it
            break
    return None


def _out_for(pointer: Path, name: str) -> dict[str, Any] | None:
    if not pointer.is_file() or pointer.stat().st_size > MAX_POINTER_BYTES:
        return None
    try:
        body = yaml.safe_load(pointer.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        log.warning("ignoring unreadable DVC file %s: %s", pointer, error)
        return None
    outs = body.get("outs") if isinstance(body, dict) else None
    for out in outs if isinstance(outs, list) else []:
        if isinstance(out, dict) and out.get("path") == name and isinstance(out.get("md5"), str):
            return out
    return None


def _checked(target: Path, tracked: Path, pointer: Path, out: dict[str, Any]) -> str | None:
    md5 = out["md5"]
    actual = _md5(target)
    if tracked == target:
        if actual == md5:
            return f"dvc:{md5}"
        log.warning(
            "%s differs from the version %s records (md5 %s): not logged", target, pointer, md5
        )
        return None
    relpath = target.relative_to(tracked).as_posix()
    listed = _listing(pointer.parent, md5).get(relpath)
    if listed is None:
        log.warning(
            "%s tracks %s but its file list is not in the DVC cache: unverified", pointer, target
        )
        return f"dvc:{md5}:{relpath}:unverified"
    if listed != actual:
        log.warning("%s differs from the version %s records: not logged", target, pointer)
        return None
    return f"dvc:{md5}:{relpath}"


def _listing(repo: Path, dir_md5: str) -> dict[str, str]:
    """The `.dir` file list DVC keeps in its cache (`.dvc/cache/files/md5/ab/cdef....dir`)."""
    for folder in [repo, *repo.parents][:MAX_DEPTH]:
        cache = folder / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
        if cache.is_file() and cache.stat().st_size <= MAX_LISTING_BYTES:
            try:
                entries = json.loads(cache.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            return {
                e["relpath"]: e["md5"]
                for e in entries
                if isinstance(e, dict) and isinstance(e.get("relpath"), str)
            }
    return {}


def _md5(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()
