"""What code and which installed packages a run ran with: the git commit and whether the tree was
dirty, the hashed lock the environment matches, and a digest of every installed distribution.

Training records these beside its params so `registry reproduce` can say what differs between the
checkout that trained a version and the one rebuilding it. The lock is found by content, not by
the venv's `.installed-<set>` stamps: the largest lock under `requirements/` whose every pin is
installed at its version (dev > pipeline > serving) is the set that ran, and its file's sha256 is
recorded. That works the same in `.venv` and in the images (which install a lock with pip and
write no stamp), and a venv changed by hand since (a `pip install -U`) matches no lock rather than
the one its stamp names. Pure reading: git and `importlib.metadata`, nothing imported that a
stage owns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# The hashed locks, largest first: each nests the ones after it (tests/unit/test_requirements_lock.py).
LOCK_SETS = ("dev", "pipeline", "serving")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
GIT_TIMEOUT = 10
# `{name}-{version}.dist-info`: both parts escaped by the wheel spec, so neither holds a `-`.
_DIST_FOLDER = re.compile(r"^([^-]+)-([^-]+)\.dist-info$", re.IGNORECASE)


@dataclass(frozen=True)
class Checkout:
    """The code a process runs: commit, dirty flag and the sha256 of `git diff HEAD` (tracked
    files only; untracked files do not count), or "unknown" outside a git checkout."""

    commit: str
    dirty: str  # "true" | "false" | "unknown"
    diff_sha256: str  # "" when clean


@dataclass(frozen=True)
class Environment:
    """The installed distributions (`name==version`, sorted) and the lock they match."""

    lock_name: str  # "requirements/dev.txt", or "none" when no lock matches every pin
    lock_sha256: str  # of the lock file's bytes; "" when none matches
    packages_sha256: str  # of the sorted `name==version` lines
    packages: tuple[str, ...]


def _git(*args: str, root: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, timeout=GIT_TIMEOUT, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8", "replace")


def git_commit(root: Path = REPO_ROOT) -> str:
    out = _git("rev-parse", "HEAD", root=root)
    return out.strip() if out else "unknown"


def checkout(root: Path = REPO_ROOT) -> Checkout:
    commit = git_commit(root)
    if commit == "unknown":
        return Checkout("unknown", "unknown", "")
    diff = _git("diff", "HEAD", "--no-ext-diff", "--binary", root=root)
    if diff is None:
        return Checkout(commit, "unknown", "")
    if not diff:
        return Checkout(commit, "false", "")
    return Checkout(commit, "true", hashlib.sha256(diff.encode("utf-8")).hexdigest())


def changed_files(root: Path = REPO_ROOT) -> list[str]:
    """Tracked files that differ from HEAD (what makes the tree dirty)."""
    out = _git("diff", "HEAD", "--name-only", root=root)
    return [line for line in (out or "").splitlines() if line]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_version(folder: Path) -> tuple[str, str] | None:
    """(name, version) of one `*.dist-info`/`*.egg-info` entry: from the folder's name when it is
    `{name}-{version}.dist-info` (the wheel spec escapes `-` in both parts, so the one `-`
    splits them), else from its metadata file (egg-info names often carry no version). A folder
    without a metadata file is no installed distribution (importlib.metadata skips it too)."""
    match = _DIST_FOLDER.match(folder.name)
    if match and (folder / "METADATA").is_file():
        return match.group(1), match.group(2)
    try:
        meta = metadata.PathDistribution(folder).metadata
    except (OSError, TypeError):  # Python 3.11 raises TypeError on a folder with no metadata
        return None
    name = meta["Name"] if meta is not None else None
    return (name, meta["Version"]) if name else None


def installed_packages(search_path: list[str] | None = None) -> tuple[str, ...]:
    """`name==version` (names normalised, sorted) of every distribution on `search_path`
    (default `sys.path`), in importlib.metadata's order and with its answer for a name found
    twice (the later entry, as `metadata.distributions()` yields them).

    Read from the `*.dist-info` folder names, not by parsing every METADATA file: about 270
    names take 0.01 s where parsing took 0.3-1.4 s per training run on a loaded machine.
    tests/unit/test_provenance.py holds it to importlib.metadata's versions."""
    found = {}
    for entry in sys.path if search_path is None else search_path:
        try:
            children = sorted(os.listdir(entry or "."))
        except OSError:  # a missing folder, or a zip (our venvs and images install none in one)
            continue
        for child in children:
            if not child.lower().endswith((".dist-info", ".egg-info")):  # as importlib matches
                continue
            named = _name_version(Path(entry or ".") / child)
            if named:
                found[_normal(named[0])] = f"{_normal(named[0])}=={named[1]}"
    return tuple(sorted(found.values()))


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[_normal(match.group(1))] = match.group(2)
    return pins


def environment(root: Path = REPO_ROOT) -> Environment:
    packages = installed_packages()
    versions = dict(line.split("==", 1) for line in packages)
    digest = hashlib.sha256("\n".join(packages).encode("utf-8")).hexdigest()
    for name in LOCK_SETS:
        lock = root / "requirements" / f"{name}.txt"
        if not lock.is_file():
            continue
        pins = lock_pins(lock)
        if pins and all(versions.get(pkg) == version for pkg, version in pins.items()):
            sha = hashlib.sha256(lock.read_bytes()).hexdigest()
            return Environment(f"requirements/{name}.txt", sha, digest, packages)
    return Environment("none", "", digest, packages)


def cpu() -> dict[str, str]:
    """The CPU a run ran on: its model name and the widest matrix kernels it offers (AVX-512
    VNNI, AVX-512, AVX2). ONNX Runtime picks its kernels by instruction set, and their last
    digits move LightGBM's splits: the model card's figures and the benchmarks hold for this
    kind of CPU."""

    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    widest = next(
        (name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"),
                                 ("avx2", "AVX2")) if flag in flags),
        "no AVX2",
    )  # fmt: skip
    return {"model": model, "kernels": widest}


def package_differences(recorded: list[str], current: list[str]) -> list[str]:
    """`name: old -> new` (or `added`/`removed`) for each distribution that differs."""
    old = dict(line.split("==", 1) for line in recorded if "==" in line)
    new = dict(line.split("==", 1) for line in current if "==" in line)
    out = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            out.append(f"{name}: {old.get(name, 'absent')} -> {new.get(name, 'absent')}")
    return out
