"""Pipeline benchmark: the features stage (local and Dask) and the flow's orchestration overhead.

1. Features stage on synthetic rows, each run in a fresh process with a fresh embedding cache (the
   ONNX export is shared, so the run embeds every question but does not re-export the model):
   rows/s and peak RSS of the whole process tree (psutil, sampled every 50 ms) at 1k, 4k and 10k
   rows on the local executor, and at 4k rows on a Dask LocalCluster of 1 and 2 worker processes
   with one compute thread each.
2. The whole pipeline on the default 1000-row sample: the stages called directly (per-stage
   times), then `python -m financemath_mlops.flows` with Prefect's temporary server (first run on
   an empty PREFECT_HOME, then a second run) and against a running `prefect server start`.
   Orchestration overhead = flow wall time - direct wall time (both whole processes, so imports
   count on both sides); the flow's task times come from what Prefect recorded.

Results go to `benchmarks/results/pipeline.json` and a table on stdout.

    python benchmarks/pipeline.py                 # everything: about 10 minutes on 2 cores
    python benchmarks/pipeline.py --skip-flow     # the features part only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "pipeline.json"
LOCAL_SIZES = (1_000, 4_000, 10_000)
DASK_ROWS = 4_000
DASK_PARTITION_ROWS = 500
FLOW_ROWS = 1_000
STAGES = ("ingestion", "features", "training", "evaluation", "promotion")
TARGETS = {
    "rss_10k_within_1.3x_1k": "local peak RSS at 10k rows <= 1.3 x at 1k rows",
    "dask_2_workers_at_least_1.6x_1": "Dask rows/s with 2 workers >= 1.6 x with 1 worker (4k rows)",
}


# --- measuring a child process ----------------------------------------------------------------


class TreeRss:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            with contextlib.suppress(psutil.Error):
                procs = [self.root, *self.root.children(recursive=True)]
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_measured(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run a command; wall time, peak tree RSS, the JSON on its last stdout line (if any)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    rss = TreeRss(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    peak = rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result: dict[str, Any] = {"wall_s": wall, "peak_rss_mb": peak / 2**20, "stdout": stdout}
    lines = stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        result["child"] = json.loads(lines[-1])
    return result


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMOPS_", "MLFLOW_"))}
    env.pop("PREFECT_API_URL", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["FMOPS_LOG_LEVEL"] = "WARNING"
    env.update(extra)
    return env


# --- workspaces -------------------------------------------------------------------------------


def shared_onnx_dir() -> Path:
    """Export the ONNX bundle once (in a child), so measured runs only load it."""
    onnx = REPO_ROOT / ".cache" / "onnx"
    onnx.mkdir(parents=True, exist_ok=True)
    code = (
        "from financemath_mlops.config import load_settings;"
        "from financemath_mlops.features.build import load_embedder;"
        f"s = load_settings({str(REPO_ROOT / 'configs' / 'default.yaml')!r}, "
        f"{{'paths': {{'cache_dir': {str(REPO_ROOT / '.cache')!r}, "
        f"'hf_cache_dir': {str(REPO_ROOT / '.cache' / 'hf')!r}}}}});"
        "load_embedder(s.features.embedding, s)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=base_env(), cwd=REPO_ROOT)
    return onnx


def workspace(root: Path, name: str, rows: int, **sections: dict[str, Any]) -> Path:
    """A folder with a config (absolute paths) and a fresh cache that shares the ONNX export."""
    work = root / name
    cache = work / "cache"
    cache.mkdir(parents=True)
    (cache / "onnx").symlink_to(REPO_ROOT / ".cache" / "onnx", target_is_directory=True)
    config = yaml.safe_load((REPO_ROOT / "configs" / "default.yaml").read_text())
    config["paths"] = {
        "raw_dir": str(work / "data" / "raw"),
        "interim_dir": str(work / "data" / "interim"),
        "processed_dir": str(work / "data" / "processed"),
        "predictions_dir": str(work / "data" / "predictions"),
        "reports_dir": str(work / "reports"),
        "cache_dir": str(cache),
        "hf_cache_dir": str(REPO_ROOT / ".cache" / "hf"),
    }
    config["ingestion"].update({"source": "sample", "rows": rows})
    config["mlflow"]["tracking_uri"] = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
    config["mlflow"]["artifact_root"] = str(work / "mlruns" / "artifacts")
    for section, values in sections.items():
        merge(config[section], values)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def merge(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def ingest_into(work: Path) -> None:
    command = [sys.executable, "-m", "financemath_mlops.ingestion", "--config", "config.yaml"]
    subprocess.run(command, check=True, env=base_env(), cwd=work, capture_output=True)


# --- children: the measured work --------------------------------------------------------------


def child_features(config: Path) -> None:
    from financemath_mlops.config import load_settings
    from financemath_mlops.features.build import build_features

    summary = build_features(load_settings(config), show_progress=False)
    print(
        json.dumps(
            {
                "rows": summary.rows,
                "seconds": summary.seconds,
                "cache_misses": summary.cache_misses,
                **{k: v for k, v in summary.extra.items() if k != "model_loads"},
            }
        )
    )


def child_stages(config: Path) -> None:
    """The flow's five stages, called directly (what the flow's tasks call), timed."""
    from financemath_mlops import tracking
    from financemath_mlops.config import load_settings
    from financemath_mlops.evaluation.evaluate import evaluate
    from financemath_mlops.evaluation.promotion import promote_if_better
    from financemath_mlops.features.build import build_features
    from financemath_mlops.ingestion import ingest
    from financemath_mlops.training.train import train

    settings = load_settings(config)
    times: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        times[name] = time.perf_counter() - started

    with timed("ingestion"):
        ingest(settings)
    with timed("features"):
        build_features(settings, show_progress=False)
    with timed("training"):
        trained = train(settings)
    with timed("evaluation"):
        evaluate(settings, trained.model_uri)
    with timed("promotion"):
        tracking.configure(settings)
        promote_if_better(settings, tracking.resolve(trained.model_uri))
    print(json.dumps(times))


# --- part 1: features -------------------------------------------------------------------------


def bench_features(
    root: Path, sizes: tuple[int, ...] = LOCAL_SIZES, dask_rows: int = DASK_ROWS
) -> list[dict[str, Any]]:
    runs: list[tuple[str, int, int, dict[str, Any]]] = [("local", 0, rows, {}) for rows in sizes]
    for workers in (1, 2):
        dask = {
            "executor": "dask",
            "dask_workers": workers,
            "partition_rows": DASK_PARTITION_ROWS,
            "embedding": {"threads": 1},
        }
        runs.append(("dask", workers, dask_rows, dask))
    results = []
    for executor, workers, rows, features in runs:
        name = f"features-{executor}-{workers}w-{rows}" if workers else f"features-local-{rows}"
        work = workspace(root, name, rows, **({"features": features} if features else {}))
        ingest_into(work)
        print(f"  {name} ...", file=sys.stderr, flush=True)
        measured = run_measured(
            [sys.executable, __file__, "--child", "features", "--config", "config.yaml"],
            base_env(),
            work,
        )
        child = measured["child"]
        entry = {
            "executor": executor,
            "workers": workers or None,
            "threads_per_worker": 1 if workers else "all cores",
            "rows": child["rows"],
            "embedded": child["cache_misses"],
            "stage_s": child["seconds"],
            "rows_per_s": child["rows"] / child["seconds"],
            "process_wall_s": measured["wall_s"],
            "peak_rss_mb": measured["peak_rss_mb"],
        }
        if executor == "dask":
            entry["startup_s"] = child["startup_seconds"]
            entry["partitions"] = child["partitions"]
            entry["partitions_rows_per_s"] = child["rows"] / child["partitions_wall_seconds"]
        results.append(entry)
        print(f"    {json.dumps(entry)}", file=sys.stderr, flush=True)
    return results


# --- part 2: the flow -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, float]]:
    """`prefect server start` on 127.0.0.1; yields (API URL, seconds until healthy)."""
    import httpx

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = base_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = (home / "server.log").open("wb")
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited; see {home / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            if time.perf_counter() - started > 180:
                raise RuntimeError(f"prefect server not healthy after 180 s; see {log.name}")
            time.sleep(0.25)
        yield api, time.perf_counter() - started
    finally:
        os.killpg(os.getpgid(server.pid), signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(server.pid), signal.SIGKILL)
        log.close()


def task_times(prefect_db: Path) -> dict[str, float]:
    """Per-task run times of the latest flow run, as Prefect recorded them (its SQLite DB)."""
    with sqlite3.connect(prefect_db) as db:
        flow_id, flow_total = db.execute(
            "select id, total_run_time from flow_run order by created desc limit 1"
        ).fetchone()
        rows = db.execute(
            "select name, total_run_time from task_run where flow_run_id = ?", (flow_id,)
        ).fetchall()
    names = {"ingest": "ingestion", "build-features": "features", "train-lightgbm": "training"}
    names |= {"evaluate-holdout": "evaluation", "promote-if-better": "promotion"}
    times = {names.get(name.rsplit("-", 1)[0], name): _seconds(total) for name, total in rows}
    times["flow_run"] = _seconds(flow_total)
    return times


def _seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    # SQLite stores intervals as a datetime offset from the epoch: "1970-01-01 00:00:12.345"
    parsed = dt.datetime.fromisoformat(str(value)).replace(tzinfo=dt.UTC)
    return (parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds()


def bench_flow(root: Path, rows: int = FLOW_ROWS) -> dict[str, Any]:
    result: dict[str, Any] = {"rows": rows}
    work = workspace(root, "flow-direct", rows)
    print("  stages called directly ...", file=sys.stderr, flush=True)
    direct = run_measured(
        [sys.executable, __file__, "--child", "stages", "--config", "config.yaml"],
        base_env(),
        work,
    )
    result["direct"] = {"wall_s": direct["wall_s"], "stages_s": direct["child"]}
    home = root / "prefect-home-temporary"
    home.mkdir()
    for label in ("temporary_server_first_run", "temporary_server"):
        work = workspace(root, f"flow-{label}", rows)
        print(f"  flow, {label} ...", file=sys.stderr, flush=True)
        flow = run_measured(
            [sys.executable, "-m", "financemath_mlops.flows", "--config", "config.yaml"],
            base_env(PREFECT_HOME=str(home)),
            work,
        )
        result[label] = {
            "wall_s": flow["wall_s"],
            "overhead_s": flow["wall_s"] - direct["wall_s"],
            "tasks_s": task_times(home / "prefect.db"),
        }
    home = root / "prefect-home-running"
    home.mkdir()
    print("  flow, running server ...", file=sys.stderr, flush=True)
    with prefect_server(home) as (api, ready_s):
        work = workspace(root, "flow-running_server", rows)
        flow = run_measured(
            [sys.executable, "-m", "financemath_mlops.flows", "--config", "config.yaml"],
            base_env(PREFECT_HOME=str(home), PREFECT_API_URL=api),
            work,
        )
    result["running_server"] = {
        "server_start_s": ready_s,
        "wall_s": flow["wall_s"],
        "overhead_s": flow["wall_s"] - direct["wall_s"],
        "tasks_s": task_times(home / "prefect.db"),
    }
    return result


# --- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def check_targets(features: list[dict[str, Any]]) -> dict[str, Any]:
    local = {f["rows"]: f for f in features if f["executor"] == "local"}
    dask = {f["workers"]: f for f in features if f["executor"] == "dask"}
    out: dict[str, Any] = {}
    if len(local) >= 2:  # 10k vs 1k rows by default
        ratio = local[max(local)]["peak_rss_mb"] / local[min(local)]["peak_rss_mb"]
        out["rss_10k_within_1.3x_1k"] = {"value": round(ratio, 3), "target": 1.3}
        out["rss_10k_within_1.3x_1k"]["met"] = ratio <= 1.3
    if 1 in dask and 2 in dask:
        ratio = dask[2]["rows_per_s"] / dask[1]["rows_per_s"]
        steady = dask[2]["partitions_rows_per_s"] / dask[1]["partitions_rows_per_s"]
        out["dask_2_workers_at_least_1.6x_1"] = {
            "value": round(ratio, 3),
            "target": 1.6,
            "met": ratio >= 1.6,
            "partitions_only": round(steady, 3),
        }
    for key, entry in out.items():
        entry["description"] = TARGETS[key]
    return out


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"pipeline benchmark {report['date']} on {m['cpus']} x {m['cpu_model']}, "
        f"{m['ram_gb']} GB RAM; load average {report['load_average']['start']} at start, "
        f"{report['load_average']['end']} at end",
        "",
        "features stage (fresh embedding cache; rows/s over the whole stage incl. model load)",
        f"{'executor':<22}{'rows':>7}{'stage s':>9}{'rows/s':>9}{'peak RSS MB':>13}"
        f"{'startup s':>11}{'rows/s after startup':>22}",
    ]
    for f in report["features"]:
        name = "local" if f["executor"] == "local" else f"dask, {f['workers']} worker(s) x 1"
        startup = f"{f['startup_s']:.1f}" if "startup_s" in f else "-"
        steady = f"{f['partitions_rows_per_s']:.0f}" if "partitions_rows_per_s" in f else "-"
        lines.append(
            f"{name:<22}{f['rows']:>7}{f['stage_s']:>9.1f}{f['rows_per_s']:>9.0f}"
            f"{f['peak_rss_mb']:>13.0f}{startup:>11}{steady:>22}"
        )
    flow = report.get("flow")
    if flow:
        lines += [
            "",
            f"end-to-end on the {flow['rows']}-row sample (process wall time, fresh caches)",
            f"{'mode':<30}{'wall s':>8}{'overhead s':>12}   stage times s ("
            + ", ".join(STAGES)
            + ")",
        ]
        direct = flow["direct"]
        stage_line = " / ".join(f"{direct['stages_s'][s]:.1f}" for s in STAGES)
        lines.append(
            f"{'stages called directly':<30}{direct['wall_s']:>8.1f}{'-':>12}   {stage_line}"
        )
        for key, label in (
            ("temporary_server_first_run", "flow, temporary server (1st)"),
            ("temporary_server", "flow, temporary server"),
            ("running_server", "flow, running prefect server"),
        ):
            run = flow[key]
            stages = " / ".join(f"{run['tasks_s'].get(s, float('nan')):.1f}" for s in STAGES)
            lines.append(f"{label:<30}{run['wall_s']:>8.1f}{run['overhead_s']:>12.1f}   {stages}")
        lines.append(
            f"(the running server took {flow['running_server']['server_start_s']:.1f} s to "
            "start; not counted in its row)"
        )
    lines += ["", "targets"]
    for entry in report["targets"].values():
        verdict = "met" if entry["met"] else "MISSED"
        lines.append(f"  {entry['description']}: {entry['value']} ({verdict})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--skip-flow", action="store_true", help="features part only")
    parser.add_argument(
        "--sizes", default=",".join(map(str, LOCAL_SIZES)), help="local-executor row counts"
    )
    parser.add_argument("--dask-rows", type=int, default=DASK_ROWS)
    parser.add_argument("--flow-rows", type=int, default=FLOW_ROWS)
    parser.add_argument("--child", choices=["features", "stages"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "features":
        child_features(args.config)
        return 0
    if args.child == "stages":
        child_stages(args.config)
        return 0

    load_start = [round(x, 2) for x in os.getloadavg()]
    shared_onnx_dir()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="fmops-bench-") as tmp:
        root = Path(tmp)
        print("features stage:", file=sys.stderr)
        sizes = tuple(int(n) for n in args.sizes.split(","))
        report["features"] = bench_features(root, sizes, args.dask_rows)
        if not args.skip_flow:
            print("end-to-end flow:", file=sys.stderr)
            report["flow"] = bench_flow(root, args.flow_rows)
    report["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    report["targets"] = check_targets(report["features"])
    report["notes"] = [
        "rows/s = rows / features-stage seconds, including model load (and cluster start for "
        "Dask); 'after startup' divides by the time from cluster ready to the last partition",
        "peak RSS: sum over the process tree (client, scheduler, nannies, workers)",
        "overhead = flow process wall time - direct-stages process wall time",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
