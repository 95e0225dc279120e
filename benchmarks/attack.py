"""Attack benchmark: does any single hostile client slow /health and /predict for everyone else?

Serves a small model trained on the synthetic sample with `python -m financemath_mlops.serving`
(the documented entry point, default limits) on 127.0.0.1. A probe measures `/health` and
`/predict` latency alone (the baseline), then during each case of corpora/hostile.py while a
second process sends that case in a bounded loop (at most --seconds and --max-sends per case).
All of it --rounds times (a baseline in every round); each case's samples are pooled over the
rounds, so a p99 is not the 2nd-worst of ~170 samples of one moment.
Cases the server answers by closing the connection (idle sockets, unfinished headers) and the
slow body are held open instead, up to --max-held at once, which is how a single client floods
connections. One more case sends heavy batches and hangs up at once (abandoned work).

With two or more cores the server is pinned to the first core and the attacker and the probe to
the last, the attacker under SCHED_IDLE (it runs while the probe waits), so the attacker's own
Python work does not count as harm done by the server: what is left is what the server spends
on hostile requests, taken from its predictions.

Reports, per case: p99 of both endpoints and the ratio to the baseline, the server's peak RSS
(process tree, sampled every 100 ms) against its RSS after warm-up, and the statuses the
attacker got (any 5xx fails). Targets (issue 12): /health p99 <= 50 ms, /predict p99 <= 2x the
baseline, peak RSS <= 1.5x idle, no 5xx. Results: benchmarks/results/attack.json and a table.

    python benchmarks/attack.py                 # ~12 minutes on 2 cores (2 rounds)
    python benchmarks/attack.py --rounds 1 --seconds 4     # quicker, noisier
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.serving import RssSampler, free_port, machine, train_model, tree_rss  # noqa: E402

from corpora.hostile import CASES, CLOSED, QUESTION, Case, post, send  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "attack.json"
PROBE_BODY = {
    "question": QUESTION,
    "tables": ["| Year | Cash flow |\n|---|---:|\n| 1 | 50 |\n| 2 | 50 |\n| 3 | 1,050 |"],
    "topic": "Quantitative Analysis & Valuation",
}
HEALTH_P99_MS = 50.0
PREDICT_RATIO = 2.0
RSS_RATIO = 1.5


# --- the attacker (its own process, so its Python work does not slow the probe) ----------------


def _abandoned_batch() -> bytes:
    return post("/predict/batch", {"items": [PROBE_BODY] * 64})


ABANDON = Case("64-item batches, client hangs up at once", _abandoned_batch, CLOSED, 3)


CORES = sorted(os.sched_getaffinity(0))  # read at import, before anything is pinned


def client_cores() -> set[int]:
    return {CORES[-1]}


def server_cores() -> set[int]:
    return {CORES[0]}


def attack(case_index: int, port: int, seconds: float, max_sends: int, max_held: int) -> dict:
    """Send one case in a bounded loop; return the statuses seen.

    The attacker shares its core with the probe, so it runs under SCHED_IDLE: only while the
    probe waits for the server. Otherwise its own Python work delays the probe's timing, and
    the cheaper the server's answers, the busier the attacker's loop and the worse /predict
    looked (measured: 404 and 405 floods read 3.4-3.5x, the server spending 0.4 ms on each).
    """
    os.sched_setaffinity(0, client_cores())
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    case = ABANDON if case_index < 0 else CASES[case_index]
    raw = case.build()
    statuses: collections.Counter[str] = collections.Counter()
    held: list[socket.socket] = []
    deadline = time.monotonic() + seconds
    sends = 0
    try:
        while time.monotonic() < deadline and sends < max_sends:
            sends += 1
            if case is ABANDON:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(raw)
                statuses["hung up"] += 1
                time.sleep(0.05)
            elif case.expect in (CLOSED, 408):  # hold it open: a connection flood
                if len(held) >= max_held:
                    time.sleep(0.05)
                    continue
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(raw)
                held.append(sock)
                statuses["held"] += 1
            else:
                outcome = send(port, raw, timeout=60)
                statuses[str(outcome.status)] += 1
    finally:
        for sock in held:
            sock.close()
    return dict(statuses)


# --- the probe ----------------------------------------------------------------------------------


def probe(base_url: str, seconds: float) -> dict[str, list[float]]:
    """Alternate GET /health and POST /predict on one keep-alive connection; latencies in ms."""
    times: dict[str, list[float]] = {"health": [], "predict": [], "errors": []}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while time.monotonic() < deadline:
            for name, call in (
                ("health", lambda: client.get("/health")),
                ("predict", lambda: client.post("/predict", json=PROBE_BODY)),
            ):
                started = time.perf_counter()
                try:
                    ok = call().status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - started) * 1000
                times[name if ok else "errors"].append(elapsed)
            time.sleep(0.02)
    return times


def p99(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 99)), 2) if values else None


def summary(times: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "health_p50_ms": round(float(np.median(times["health"])), 2) if times["health"] else None,
        "health_p99_ms": p99(times["health"]),
        "predict_p50_ms": round(float(np.median(times["predict"])), 2)
        if times["predict"]
        else None,
        "predict_p99_ms": p99(times["predict"]),
        "probe_requests": len(times["health"]) + len(times["predict"]),
        "probe_failures": len(times["errors"]),
    }


# --- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def served(model_uri: str, tracking_uri: str, workdir: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMOPS_", "MLFLOW_"))}
    env |= {
        "FMOPS_SERVING__MODEL_URI": model_uri,
        "FMOPS_MLFLOW__TRACKING_URI": tracking_uri,
        "FMOPS_PATHS__CACHE_DIR": str(REPO_ROOT / ".cache"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "financemath_mlops.serving", "--port", str(port)],
            env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: os.sched_setaffinity(0, server_cores()),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            raise RuntimeError("server not ready:\n" + log_path.read_text(errors="replace")[-3000:])
        yield port, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def run_case(pool: Any, index: int, port: int, pid: int, args: argparse.Namespace) -> dict:
    """One round of one case: the probe's raw latencies, the attacker's statuses, peak RSS."""
    sampler = RssSampler(pid)
    pending = pool.apply_async(attack, (index, port, args.seconds, args.max_sends, args.max_held))
    time.sleep(0.3)  # let the attack start before measuring
    times = probe(f"http://127.0.0.1:{port}", args.seconds - 0.5)
    statuses = pending.get(timeout=args.seconds + 120)
    return {"times": times, "attacker": statuses, "peak_rss": sampler.stop()}


def pooled(rounds: list[dict[str, list[float]]]) -> dict[str, Any]:
    """Every round's probe samples together (a p99 of ~2 x 170 /predict samples, not of one
    round's), with each round's own /predict p99 beside it."""
    times: dict[str, list[float]] = {"health": [], "predict": [], "errors": []}
    for each in rounds:
        for name, values in each.items():
            times[name] += values
    return {**summary(times), "predict_p99_ms_by_round": [p99(r["predict"]) for r in rounds]}


def pooled_case(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A case over its rounds: pooled probe samples, the highest RSS, the statuses summed."""
    statuses: collections.Counter[str] = collections.Counter()
    for each in rounds:
        statuses.update(each["attacker"])
    return {
        **pooled([r["times"] for r in rounds]),
        "peak_rss_mb": round(max(r["peak_rss"] for r in rounds) / 2**20, 1),
        "attacker": dict(statuses),
    }


def evaluate(
    row: dict[str, Any], baseline: dict[str, Any], idle_rss_mb: float, valid_work: bool = False
) -> dict[str, Any]:
    """The targets met by one case. A valid batch's /predict ratio is reported, not judged."""
    predict_ratio = (row["predict_p99_ms"] or float("inf")) / baseline["predict_p99_ms"]
    five_xx = sum(n for status, n in row["attacker"].items() if status.startswith("5"))
    checks = {
        "health_p99": (row["health_p99_ms"] or float("inf")) <= HEALTH_P99_MS,
        "predict_p99_ratio": predict_ratio <= PREDICT_RATIO,
        "peak_rss_ratio": row["peak_rss_mb"] / idle_rss_mb <= RSS_RATIO,
        "no_5xx": five_xx == 0 and row["probe_failures"] == 0,
    }
    if valid_work:
        del checks["predict_p99_ratio"]
    return {
        "predict_p99_ratio": round(predict_ratio, 2),
        "peak_rss_ratio": round(row["peak_rss_mb"] / idle_rss_mb, 2),
        "checks": checks,
        "met": all(checks.values()),
    }


def verdict(row: dict[str, Any]) -> str:
    if not row["met"]:
        return "NO: " + ", ".join(k for k, v in row["checks"].items() if not v)
    judged = "predict_p99_ratio" in row["checks"]
    return "yes" if judged else "yes (valid request: /predict ratio reported, not judged)"


def table(results: dict[str, Any]) -> str:
    base = results["baseline"]
    lines = [
        "| case | attacker got | /health p99 ms | /predict p99 ms (x base) | peak RSS MB (x idle) | met |",
        "|---|---|---:|---:|---:|---|",
        f"| none (baseline) | - | {base['health_p99_ms']} | {base['predict_p99_ms']} (1.00) "
        f"| {results['idle_rss_mb']} (1.00) | - |",
    ]
    for row in results["cases"]:
        got = ", ".join(f"{n} x {s}" for s, n in sorted(row["attacker"].items()))
        lines.append(
            f"| {row['case']} | {got} | {row['health_p99_ms']} | {row['predict_p99_ms']} "
            f"({row['predict_p99_ratio']:.2f}) | {row['peak_rss_mb']} ({row['peak_rss_ratio']:.2f}) "
            f"| {verdict(row)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per case (and baseline x2)")
    parser.add_argument("--max-sends", type=int, default=2_000, help="attack loop bound per case")
    parser.add_argument("--max-held", type=int, default=1_000, help="connections held at once")
    parser.add_argument(
        "--rounds", type=int, default=2,
        help="rounds of baseline + every case; each case's samples pooled over rounds",
    )  # fmt: skip
    parser.add_argument("--only", help="run only cases whose name contains this")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the server
    load_at_start = os.getloadavg()
    indexes = [i for i, c in enumerate(CASES) if not args.only or args.only in c.name]
    if not args.only or args.only in ABANDON.name:
        indexes.append(-1)
    with tempfile.TemporaryDirectory(prefix="fmops-attack-") as tmp:
        workdir = Path(tmp)
        print("training a small model on the synthetic sample ...", flush=True)
        model_uri, tracking_uri = train_model(workdir)
        with served(model_uri, tracking_uri, workdir) as (port, process):
            os.sched_setaffinity(0, client_cores())  # the probe
            base_url = f"http://127.0.0.1:{port}"
            probe(base_url, 3)  # warm-up
            idle_rss = tree_rss(process.pid)
            samples: dict[int, list[dict[str, Any]]] = {i: [] for i in indexes}
            base_rounds: list[dict[str, list[float]]] = []
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:
                for round_number in range(1, args.rounds + 1):
                    # A baseline in every round: both sides of each ratio see the same machine.
                    times = probe(base_url, args.seconds * 2)
                    base_rounds.append(times)
                    print(f"round {round_number}/{args.rounds} baseline: {summary(times)}")
                    for index in indexes:
                        case = ABANDON if index < 0 else CASES[index]
                        samples[index].append(run_case(pool, index, port, process.pid, args))
                        print(f"  {case.name}: {summary(samples[index][-1]['times'])}", flush=True)
                        time.sleep(1.0)  # let held connections close before the next case
            baseline = pooled(base_rounds)
            print(f"baseline: {baseline}", flush=True)
            rows = []
            for index in indexes:
                case = ABANDON if index < 0 else CASES[index]
                row = {"case": case.name, "issue_defect": case.issue_defect}
                row |= pooled_case(samples[index])
                row |= evaluate(row, baseline, idle_rss / 2**20, case.valid_work)
                rows.append(row)
    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(load_at_start),
        "setup": {
            "server": "python -m financemath_mlops.serving (1 worker, default limits)",
            "server_cores": sorted(server_cores()),
            "client_cores": sorted(client_cores()),
            "seconds_per_case": args.seconds,
            "rounds": args.rounds,
            "attacker": "its own process on the probe's core under SCHED_IDLE (runs while the "
            "probe waits)",
            "max_sends": args.max_sends,
            "max_held": args.max_held,
            "probe": "one keep-alive client alternating GET /health and POST /predict (1 table)",
        },
        "targets": {
            "health_p99_ms": HEALTH_P99_MS,
            "predict_p99_ratio": PREDICT_RATIO,
            "peak_rss_ratio": RSS_RATIO,
        },
        "idle_rss_mb": round(idle_rss / 2**20, 1),
        "baseline": baseline,
        "cases": rows,
        "all_met": all(r["met"] for r in rows),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
