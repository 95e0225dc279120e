"""The front door, measured: `git clone` -> `make run` -> the printed serve command -> a prediction.

Each installer in turn (uv, the default; then pip, `INSTALLER=pip`, the fallback and what `make`
used before issue 30), on the same commit in the same run:

1. clone the commit into an empty folder (a local clone: no network in this phase);
2. install the pipeline set: `make .venv/.installed-pipeline`, the first thing `make run` does;
3. `make run` itself, whose install is then up to date: the pipeline on the 1,000-row sample;
4. the serve command `make run` printed, until `/ready` answers 200;
5. one `/predict`, which must give a finite number (`.ci/check_service.py`'s question).

Every cache starts empty: `XDG_CACHE_HOME` (the uv tool venv, the ONNX export cache
`financemath-mlops/onnx`, the per-user caches the project keeps there), `UV_CACHE_DIR`,
`PIP_CACHE_DIR`, each in a fresh temporary folder, and nothing of the clone is reused (its
Hugging Face cache and Prefect home are inside it). The project's own variables (`FMOPS_*`, which
could move the export cache elsewhere), `PREFECT_*` (a running server would skip the temporary
one) and `MLFLOW_*` are removed: a newcomer has none. pip's own settings (find-links, mirrors,
certificates) are left as they are: they are where both installers take packages from.

The baseline is **pip** (`INSTALLER=pip`: what `make run` used before issue 30, and the fallback
where uv cannot be had), measured on the same commit in the same run; the table gives each
phase's ratio to it. "MB received" is the rise of the received bytes of every non-loopback
interface (/proc/net/dev) during the phase: the machine's, so other work on it is counted too,
and files read from a local find-links folder or a file:// index are not counted at all; "cache
MB" is what the run left in its (empty at the start) caches, its own downloads and unpacked
files. Results go to `benchmarks/results/front_door.json` and a table.

    python3 benchmarks/front_door.py                      # uv then pip: about 3-4 minutes on 2 cores
    python3 benchmarks/front_door.py --repeat 2           # twice each, medians in the table
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
# issue 30: clone -> make run -> serve -> first prediction, empty caches, with uv
TARGET_SECONDS = 75
GOAL_SECONDS = 60
BASELINE = "pip"
CLEARED_PREFIXES = ("FMOPS_", "PREFECT_", "MLFLOW_")


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


def folder_mb(folder: Path) -> float:
    """Bytes of the files under ``folder`` (links not followed), in MB."""
    total = 0
    for file in folder.rglob("*"):
        if file.is_file() and not file.is_symlink():
            total += file.stat().st_size
    return round(total / 1e6, 1)


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


def newcomer_env(
    installer: str, root: Path, base: dict[str, str] | os._Environ[str]
) -> tuple[dict[str, str], dict[str, Path]]:
    """``base`` as a newcomer would have it: every cache a new empty folder under ``root``, none
    of the project's, Prefect's or MLflow's variables, no enclosing venv or make."""
    caches = {name: root / name for name in ("xdg-cache", "uv-cache", "pip-cache")}
    for folder in caches.values():
        folder.mkdir()
    env = {
        **base,
        "INSTALLER": installer,
        "XDG_CACHE_HOME": str(caches["xdg-cache"]),
        "UV_CACHE_DIR": str(caches["uv-cache"]),
        "PIP_CACHE_DIR": str(caches["pip-cache"]),
    }
    for name in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    for name in [n for n in env if n.startswith(CLEARED_PREFIXES)]:
        env.pop(name)
    return env, caches


def front_door(installer: str, commit: str, work: Path) -> dict:
    """One walk through the front door with ``installer``, every cache empty."""
    root = Path(tempfile.mkdtemp(prefix=f"front-door-{installer}-", dir=work))
    clone = root / "clone"
    env, caches = newcomer_env(installer, root, os.environ)
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
    pipeline = re.findall(r"^pipeline finished in (\d+)s", output, re.MULTILINE)
    exports = caches["xdg-cache"] / "financemath-mlops" / "onnx"
    exported = sorted(p.name for p in exports.iterdir()) if exports.is_dir() else []
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
        "pipeline_seconds_reported": int(pipeline[-1]) if pipeline else None,
        "venv_mb": round(venv_mb),
        "cache_mb": {name: folder_mb(folder) for name, folder in caches.items()},
        "export_cache_entries": exported,  # made by this run in the empty XDG_CACHE_HOME
        "load_average_end": os.getloadavg(),
        "root": str(root),
    }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return round((ordered[middle - 1] + ordered[middle]) / 2, 1)


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per installer: the median of each phase's seconds and MB, and of the total."""
    out: dict[str, dict] = {}
    for installer, results in runs.items():
        out[installer] = {
            "phases": {
                phase: {
                    key: median([r["phases"][phase][key] for r in results])
                    for key in ("seconds", "mb_received")
                }
                for phase in PHASES
            },
            "total_seconds": median([r["total_seconds"] for r in results]),
            "totals": [r["total_seconds"] for r in results],
        }
    return out


def targets(summary: dict[str, dict]) -> dict[str, dict]:
    """Issue 30's target and goal for uv's total, and uv against the pip baseline."""
    out: dict[str, dict] = {}
    if "uv" in summary:
        total = summary["uv"]["total_seconds"]
        out[f"uv_total_at_most_{TARGET_SECONDS}s"] = {
            "value": total,
            "met": total <= TARGET_SECONDS,
        }
        out[f"uv_total_at_most_{GOAL_SECONDS}s_goal"] = {
            "value": total,
            "met": total <= GOAL_SECONDS,
        }
    if "uv" in summary and BASELINE in summary:
        ratio = summary["uv"]["total_seconds"] / summary[BASELINE]["total_seconds"]
        out[f"uv_total_over_{BASELINE}"] = {"value": round(ratio, 2), "met": ratio < 1.0}
    return out


def print_table(summary: dict[str, dict], repeat: int) -> None:
    names = list(summary)
    ratio = "uv" in summary and BASELINE in summary
    what = f"median of {repeat} runs" if repeat > 1 else "one run"
    print(f"\n{'phase (' + what + ')':<28}" + "".join(f"{n:>18}" for n in names)
          + (f"{'uv / ' + BASELINE:>12}" if ratio else ""))  # fmt: skip
    for phase in PHASES:
        cells = [
            f"{r['phases'][phase]['seconds']:6.1f} s {r['phases'][phase]['mb_received']:6.0f} MB"
            for r in summary.values()
        ]
        line = f"{phase:<28}" + "".join(f"{cell:>18}" for cell in cells)
        if ratio:
            base = summary[BASELINE]["phases"][phase]["seconds"]
            own = summary["uv"]["phases"][phase]["seconds"]
            line += f"{own / base:>12.2f}" if base > 0 else f"{'-':>12}"
        print(line)
    line = f"{'total':<28}" + "".join(f"{r['total_seconds']:>16.1f} s" for r in summary.values())
    if ratio:
        line += f"{summary['uv']['total_seconds'] / summary[BASELINE]['total_seconds']:>12.2f}"
    print(line)
    for name, target in targets(summary).items():
        print(f"  {name}: {target['value']} ({'met' if target['met'] else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default="HEAD", help="the commit to clone (default: HEAD)")
    parser.add_argument(
        "--installers",
        default="uv,pip",
        help=f"comma-separated, in order: uv, pip (default: uv,pip; {BASELINE} is the baseline)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="walk through the front door this many times each"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the clones and caches")
    args = parser.parse_args(argv)
    installers = args.installers.split(",")
    unknown = sorted(set(installers) - {"uv", "pip"})
    if unknown:
        parser.error(f"--installers: unknown {unknown}: uv, pip")
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", args.commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="front-door-"))
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {name: [] for name in installers}
    try:
        for _ in range(args.repeat):  # interleaved: uv, pip, uv, pip (load drifts alike)
            for installer in installers:
                runs[installer].append(front_door(installer, commit, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(runs)
    print_table(summary, args.repeat)
    print(
        f"(baseline: {BASELINE}; load average {load_before[0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores)"
    )
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "baseline": BASELINE,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_start": load_before,
            "load_average_end": os.getloadavg(),
        },
        "summary": summary,
        "targets": targets(summary),
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
