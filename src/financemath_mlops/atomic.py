"""Atomic file writes for every stage: write a temp file beside the target, then rename it.

An interrupted run (exception, Ctrl-C, kill) never leaves a half-written output behind. Temp files
are created with the process umask (like any other output, not 0600) and carry the writer's pid,
so a later write of the same target removes the leftovers of writers that were killed.

:func:`atomic_set` does the same for several files that must change together (ingestion's output,
rejects and manifest): they are written into a fresh generation folder and published by renaming
one ``current`` symlink, so readers see the previous complete set or the new one, never a mix.

A full disk (ENOSPC, or EDQUOT for a quota) while writing becomes :class:`OutOfSpaceError`
(exit 1), naming the target, the space left on its file system and what was kept; the temp files
are removed first, so the previous outputs stay as they were and nothing half-written remains.
:func:`published_folder` and :func:`append_line` extend the same promise to a report folder and
to one line of an append-only index.
"""

from __future__ import annotations

import contextlib
import errno
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

from financemath_mlops.errors import OutOfSpaceError

log = logging.getLogger(__name__)

_TEMP_PID = re.compile(r"\.(\d+)\.[0-9a-f]{8}")
_STAGED_FOLDER = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")
CURRENT = "current"


SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How libraries that re-raise without errno word it: pyarrow ("[errno 28] No space left on
# device"), SQLite through SQLAlchemy/MLflow ("database or disk is full").
_SPACE_WORDS = ("no space left on device", "disk quota exceeded", "database or disk is full")


def is_out_of_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says a disk or quota is full."""
    for _ in range(8):  # the cause chain, bounded
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
            return True
        if any(words in str(exc).lower() for words in _SPACE_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_space(path: Path | str) -> str:
    """``"12 KiB free of 64 KiB on /mnt"``: the file system holding ``path`` (or its nearest
    existing parent), for messages; ``"free space unknown"`` where it cannot be read."""
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        stats = os.statvfs(here)
    except OSError:
        return "free space unknown"
    mount = here
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    free, total = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
    return f"{_size(free)} free of {_size(total)} on {mount}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def out_of_space(
    path: Path | str, kept: str, what: str = "writing", also: Sequence[Path | str] = ()
) -> OutOfSpaceError:
    """The error a full disk under ``path`` becomes: the path, the space left, what was kept,
    what to do. ``kept`` says what the user still has (``"the previous ... is unchanged"``);
    ``also`` names other folders the failed write may have been in, with their free space."""
    folder = Path(path).parent if not Path(path).is_dir() else Path(path)
    others = "".join(f"; {other}: {free_space(other)}" for other in also)
    return OutOfSpaceError(
        f"no space left on device {what} {path} ({free_space(path)}{others}); {kept}. Free "
        f"space there (`df -h {folder}`) or write elsewhere, then rerun the same command"
    )


@contextlib.contextmanager
def space_checked(path: Path | str, kept: str, what: str = "writing") -> Iterator[None]:
    """Turn a full disk inside the block into :func:`out_of_space` for ``path``; other errors
    (and an :class:`OutOfSpaceError` already raised by an inner block) pass unchanged."""
    try:
        yield
    except OutOfSpaceError:
        raise
    except Exception as exc:
        if not is_out_of_space(exc):
            raise
        raise out_of_space(path, kept, what) from exc


def _kept_file(target: Path) -> str:
    if target.is_file():
        return f"the previous {target.name} is unchanged"
    return "nothing was written"


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
    kept = _kept_file(target)
    with space_checked(target, kept):
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


@contextlib.contextmanager
def published_folder(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it becomes ``target``.

    A new ``target`` appears whole with one rename (a report folder: every file or none). An
    existing one (a folder the user named) gets each staged file renamed over its namesake, all
    written before the first rename, so a failure while writing leaves it as it was. On a full
    disk the staging folder is removed and :class:`OutOfSpaceError` names ``target``; staging
    folders of killed writers are removed by the next call in the same parent.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_folders(target.parent)
    kept = (
        f"the files already in {target.name} are unchanged"
        if target.is_dir()
        else f"no partial {target.name} was left behind"
    )
    with space_checked(target, kept):
        staging = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        staging.mkdir(mode=0o777)
        try:
            yield staging
            for path in staging.iterdir():
                _fsync(path)
            if target.is_dir():
                for path in sorted(staging.iterdir()):
                    os.replace(path, target / path.name)
            else:
                os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_folders(parent: Path) -> None:
    """Staging folders (``.<name>.<pid>.<token>.tmp``) of writers that no longer run."""
    for entry in parent.glob(".*.tmp"):
        match = _STAGED_FOLDER.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match.group(1))):
            log.info("removing %s, left by an interrupted run", entry)
            shutil.rmtree(entry, ignore_errors=True)


def append_line(target: Path, line: str) -> None:
    """Append one line (``\n`` added) with one write in append mode, or nothing.

    Concurrent writers interleave whole lines. A failed or short write (a full disk) is cut back
    to where the file ended, so no torn line glues itself to the next writer's; then a full disk
    raises :class:`OutOfSpaceError` naming ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    with space_checked(target, f"{target.name} is as it was (no torn line)"):
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
            except OSError:
                _cut_back(fd, before)
                raise
            if written != len(data):
                _cut_back(fd, before)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        finally:
            os.close(fd)


def _cut_back(fd: int, size: int) -> None:
    """Cut the file back to ``size``: our torn tail goes (on a full disk no other writer's
    line can have landed after it)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)


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
    names = ", ".join(t.name for t in targets)
    kept = (
        f"the previous set ({names}) is unchanged" if targets[0].exists() else "nothing was written"
    )
    with space_checked(targets[0], kept), _locked_set(store, targets) as generation:
        yield {t: generation / t.name for t in targets}


@contextlib.contextmanager
def _locked_set(store: Path, targets: list[Path]) -> Iterator[Path]:
    """The body of :func:`atomic_set`: a fresh generation folder, published on success."""
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
            yield generation
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
