"""The front door, measured: `git clone` -> `make run` -> the printed serve command -> a prediction.

Each installer in turn (uv, the default; then pip, `INSTALLER=pip`, the fallback and what `make`
used before issue 30), on the same commit in the same run:

1. clone the commit into an empty folder (a local clone: no network in this phase);
2. install the pipeline set: `make .venv/.installed-pipeline`, the first thing `make run` does;
3. `make run` itself, whose install is then up to date: the pipeline on the 1,000-row sample;
4. the serve command `make run` printed, until `/ready` answers 200;
5. one `/predict`, which must give a finite number (`.ci/check_service.py`'s question).

Every cache starts empty: `XDG_CACHE_HOME` (the uv tool venv, Hugging Face, the per-user caches
the project keeps there), `UV_CACHE_DIR`, `PIP_CACHE_DIR`, each in a fresh temporary folder, and
nothing of the clone is reused. pip's own settings (find-links, mirrors, certificates) are left
as they are: they are where both installers take packages from. "MB received" is the rise of the
received bytes of every non-loopback interface (/proc/net/dev) during the phase: the machine's,
so other work on it is counted too, and files read from a local find-links folder or a file://
index are not counted at all. Results go to `benchmarks/results/front_door.json` and a table.

    python3 benchmarks/front_door.py                      # uv then pip: about 3-4 minutes on 2 cores
    python3 benchmarks/front_door.py --installers uv      # uv only: about 1 minute
    python3 benchmarks/front_door.py --commit HEAD~3      # another commit of this repository

stdlib only, so it runs with any Python 3.11 and without the project installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "front_door.json"
PHASES = (
    "clone",
    "install (pipeline set)",
    "make run (pipeline)",
    "serve until /ready",
    "first /predict",
)
T = TypeVar("T")
GOAL_SECONDS = 75  # issue 30: clone -> make run -> serve -> first prediction, empty caches


def received_bytes() -> int:
    """Bytes received so far by every non-loopback interface (the whole machine's)."""
    total = 0
    for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip() != "lo":
            total += int(counters.split()[0])
    return total


class Phases:
    """Seconds and bytes received per phase, in order."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def run(self, name: str, action: Callable[..., T], *args: object) -> T:
        bytes_before, started = received_bytes(), time.monotonic()
        result = action(*args)
        self.rows[name] = {
            "seconds": round(time.monotonic() - started, 1),
            "mb_received": round((received_bytes() - bytes_before) / 1e6, 1),
        }
        print(
            f"  {name:<24} {self.rows[name]['seconds']:7.1f} s "
            f"{self.rows[name]['mb_received']:8.1f} MB",
            flush=True,
        )
        return result


def make(clone: Path, env: dict[str, str], log: Path, *targets: str) -> str:
    with log.open("a") as out:
        result = subprocess.run(
            ["make", "-C", str(clone), *targets],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        out.write(result.stdout)
    if result.returncode != 0:
        raise SystemExit(f"make {' '.join(targets)} failed; its output: {log}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen, log: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the served model exited before /ready; its log: {log}")
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"/ready did not answer 200 within 180 s; the service's log: {log}")


def predict(clone: Path, base: str, server: subprocess.Popen) -> None:
    # .ci/check_service.py: /ready (already 200 here), then one /predict with a finite number
    subprocess.run(
        [sys.executable, str(clone / ".ci" / "check_service.py"), base, str(server.pid)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def front_door(installer: str, commit: str, work: Path) -> dict:
    """One walk through the front door with ``installer``, every cache empty."""
    root = Path(tempfile.mkdtemp(prefix=f"front-door-{installer}-", dir=work))
    clone = root / "clone"
    caches = {name: root / name for name in ("xdg-cache", "uv-cache", "pip-cache")}
    for folder in caches.values():
        folder.mkdir()
    env = {
        **os.environ,
        "INSTALLER": installer,
        "XDG_CACHE_HOME": str(caches["xdg-cache"]),
        "UV_CACHE_DIR": str(caches["uv-cache"]),
        "PIP_CACHE_DIR": str(caches["pip-cache"]),
    }
    for name in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    log = root / "make.log"
    print(f"{installer}: {root}", flush=True)
    phases = Phases()

    def clone_commit() -> None:
        subprocess.run(
            ["git", "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(clone)], check=True
        )
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)

    phases.run("clone", clone_commit)
    phases.run("install (pipeline set)", make, clone, env, log, ".venv/.installed-pipeline")
    output = phases.run("make run (pipeline)", make, clone, env, log, "run")
    printed = re.findall(r"^ *serve it: *(.+)$", output, re.MULTILINE)
    if not printed:
        raise SystemExit(f"make run printed no 'serve it:' command; its output: {log}")
    port = free_port()
    serve_log = root / "serve.log"
    with serve_log.open("w") as out:
        server = subprocess.Popen(
            [*printed[-1].split(), "--port", str(port)],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        phases.run("serve until /ready", wait_ready, base, server, serve_log)
        phases.run("first /predict", predict, clone, base, server)
    finally:
        server.terminate()
        server.wait(timeout=30)
    total = round(sum(row["seconds"] for row in phases.rows.values()), 1)
    venv_mb = sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file()) / 1e6
    print(f"  {'total':<24} {total:7.1f} s", flush=True)
    return {
        "phases": phases.rows,
        "total_seconds": total,
        "venv_mb": round(venv_mb),
        "root": str(root),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default="HEAD", help="the commit to clone (default: HEAD)")
    parser.add_argument(
        "--installers",
        default="uv,pip",
        help="comma-separated, in order: uv, pip (default: uv,pip)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the clones and caches")
    args = parser.parse_args(argv)
    installers = args.installers.split(",")
    unknown = sorted(set(installers) - {"uv", "pip"})
    if unknown:
        parser.error(f"--installers: unknown {unknown}: uv, pip")
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", args.commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="front-door-"))
    load_before = os.getloadavg()
    results = {}
    try:
        for installer in installers:
            results[installer] = front_door(installer, commit, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'phase':<24}" + "".join(f"{name:>18}" for name in results))
    for phase in PHASES:
        cells = [
            f"{r['phases'][phase]['seconds']:6.1f} s {r['phases'][phase]['mb_received']:6.0f} MB"
            for r in results.values()
        ]
        print(f"{phase:<24}" + "".join(f"{cell:>18}" for cell in cells))
    print(f"{'total':<24}" + "".join(f"{r['total_seconds']:>16.1f} s" for r in results.values()))
    print(
        f"(goal: <= {GOAL_SECONDS} s with uv; load average {load_before[0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores)"
    )
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_start": load_before,
            "load_average_end": os.getloadavg(),
        },
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
