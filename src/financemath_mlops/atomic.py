"""Atomic file writes for every stage: write a temp file beside the target, then rename it.

An interrupted run (exception, Ctrl-C, kill) never leaves a half-written output behind. Temp files
are created with the process umask (like any other output, not 0600) and carry the writer's pid,
so a later write of the same target removes the leftovers of writers that were killed.

:func:`atomic_set` does the same for several files that must change together (ingestion's output,
rejects and manifest): they are written into a fresh generation folder and published by renaming
one ``current`` symlink, so readers see the previous complete set or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_TEMP_PID = re.compile(r"\.(\d+)\.[0-9a-f]{8}")
CURRENT = "current"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (a leftover file's writer, say)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Delete `.<name>.<pid>.<token>*.tmp` files of writers that no longer run."""
    prefix = f".{target.name}"
    for leftover in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
        match = _TEMP_PID.match(leftover.name, len(prefix))
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            log.info("removing %s, left by an interrupted run", leftover)
            leftover.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _create_temp(target: Path, suffix: str) -> Path:
    """A new empty file beside ``target``, mode 0666 minus the umask (mkstemp would give 0600)."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temp file beside {target}")


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path in the target's folder; rename it to ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = _create_temp(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_writer(target: Path) -> Iterator[IO[str]]:
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def dump_jsonl(handle: IO[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line to an open text file; returns the number of lines."""
    count = 0
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False))
        handle.write("\n")
        count += 1
    return count


def write_jsonl(target: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line, atomically; returns the number of lines."""
    with atomic_writer(target) as handle:
        return dump_jsonl(handle, rows)


def write_json(target: Path, payload: Any) -> None:
    with atomic_writer(target) as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, allow_nan=False)
        handle.write("\n")


# --- several files as one unit -----------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks: how outputs name the exact input they used."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def set_store(first: Path) -> Path:
    """Where the generations of the set led by ``first`` live: a hidden folder beside it."""
    return first.with_name(f".{first.name}.set")


@contextlib.contextmanager
def atomic_set(targets: Sequence[Path]) -> Iterator[dict[Path, Path]]:
    """Yield a fresh path for each target; on success publish them all with one rename.

    Each target becomes a symlink ``<target> -> .<first>.set/current/<name>`` and ``current``
    points at the newest complete generation. On an exception nothing visible changes; after a
    kill the unfinished generation is removed by the next call (under a lock, so two writers
    never clean up each other's work). Targets written by the old one-file-at-a-time code are
    adopted as the previous generation first, so they stay visible until the switch.
    """
    targets = [Path(t) for t in targets]
    folder = targets[0].parent
    if any(t.parent != folder for t in targets) or len({t.name for t in targets}) != len(targets):
        raise ValueError(f"a file set needs distinct names in one folder: {targets}")
    store = set_store(targets[0])
    store.mkdir(parents=True, exist_ok=True)
    with (store / "lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released by the kernel even on kill -9
        _adopt_plain_files(store, targets)
        _remove_unpublished(store)
        for target in targets:
            _remove_stale_temps(target)
        for target in targets:
            _link(target, Path(store.name) / CURRENT / target.name)
        generation = store / f"g-{time.time_ns()}-{os.getpid()}"
        generation.mkdir()
        try:
            yield {t: generation / t.name for t in targets}
            for path in generation.iterdir():
                _fsync(path)
            _fsync(generation)
            previous = _current_generation(store)
            _link(store / CURRENT, Path(generation.name))
            _fsync(store)
        except BaseException:
            shutil.rmtree(generation, ignore_errors=True)
            if _current_generation(store) is None:  # nothing was ever published: leave no trace
                for target in targets:
                    target.unlink(missing_ok=True)
                shutil.rmtree(store, ignore_errors=True)
            raise
        if previous is not None and previous != generation:
            shutil.rmtree(previous, ignore_errors=True)


def _current_generation(store: Path) -> Path | None:
    link = store / CURRENT
    if not link.is_symlink():
        return None
    return store / os.readlink(link)


def _remove_unpublished(store: Path) -> None:
    """Generations and temp links a killed writer left; the published one stays."""
    keep = _current_generation(store)
    for entry in store.iterdir():
        if entry.name in (CURRENT, "lock") or entry == keep:
            continue
        log.info("removing %s, left by an interrupted run", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _adopt_plain_files(store: Path, targets: list[Path]) -> None:
    """Regular files at the targets (older layout): make them the published generation."""
    plain = [t for t in targets if t.is_file() and not t.is_symlink()]
    if not plain or _current_generation(store) is not None:
        return  # a stray file written over a link is replaced by the link below
    generation = store / f"g-{time.time_ns()}-{os.getpid()}-adopted"
    generation.mkdir()
    for target in plain:
        try:
            os.link(target, generation / target.name)
        except OSError:  # no hard links on this file system
            shutil.copy2(target, generation / target.name)
    _link(store / CURRENT, Path(generation.name))
    for target in plain:
        _link(target, Path(store.name) / CURRENT / target.name)


def _link(path: Path, points_to: Path) -> None:
    """Make ``path`` a symlink to ``points_to`` with one atomic rename."""
    if path.is_symlink() and os.readlink(path) == str(points_to):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.link.tmp")
    os.symlink(points_to, tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
