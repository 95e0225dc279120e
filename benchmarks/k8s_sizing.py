"""Sizing for deploy/k8s: memory and CPU of one running prediction service, idle and under load.

Starts `python -m financemath_mlops.serving --model-uri MODEL` (the folder `make run` exports) on
a free 127.0.0.1 port, waits for /ready, then samples the process's RSS and CPU time every 50 ms
(psutil) through three phases: idle after the model loaded (the baseline), a single client
sending /predict back to back, and CONCURRENCY clients at once (saturation). The container's
resource requests and limits in deploy/k8s/base/inference-deployment.yaml are read from this
table: the memory request covers the loaded-model RSS, the limit the peak under load with
headroom; the CPU request is what one busy client costs. Ratios are against the idle baseline.

    python benchmarks/k8s_sizing.py                    # ~1 minute on 2 cores
    python benchmarks/k8s_sizing.py --seconds 10 --concurrency 8
    python benchmarks/k8s_sizing.py --python /tmp/lean/bin/python   # the image's install

``--python``: the interpreter of the install to size (default: this one). The image runs the
``serving`` extra only (``requirements/serving.txt``): a venv of it sizes the pod, the full
``dev`` venv oversizes it. ``--inference-threads`` is the manifest's
``FMOPS_SERVING__INFERENCE_THREADS`` (1: one ONNX session).

Writes benchmarks/results/k8s_sizing.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
QUESTION = {
    "question": "What is the future value of $1,000 at 5% for 3 years?",
    "tables": [],
    "topic": "Quantitative Analysis & Valuation",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler:
    """Peak RSS and CPU seconds of a process tree, sampled in a thread."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc, self.peak_rss, self.stop = proc, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def tree(self) -> list[psutil.Process]:
        return [self.proc, *self.proc.children(recursive=True)]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.tree())

    def cpu_s(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.tree())

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak_rss = max(self.peak_rss, self.rss())
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def load(base: str, clients: int, seconds: float) -> int:
    """Clients sending /predict back to back for `seconds`; returns the answered count."""
    done = [0] * clients
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while time.monotonic() < deadline:
                http.post("/predict", json=QUESTION).raise_for_status()
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def phase(sampler: Sampler, name: str, run, seconds: float) -> dict:
    cpu0, t0 = sampler.cpu_s(), time.monotonic()
    sampler.peak_rss = sampler.rss()
    answered = run()
    wall = time.monotonic() - t0
    return {
        "phase": name,
        "rss_mib_peak": round(sampler.peak_rss / 2**20, 1),
        "cpu_cores": round((sampler.cpu_s() - cpu0) / wall, 2),
        "requests_per_s": round(answered / wall, 1) if answered else 0.0,
        "seconds": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default=str(ROOT / "models" / "serving"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--python", default=sys.executable, help="the install to size")
    parser.add_argument(
        "--inference-threads", type=int, default=1, help="as deploy/k8s sets it (default 1)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/k8s_sizing.json")
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_dir = tempfile.mkdtemp(prefix="fmops-sizing-")  # the prediction log is on, as deployed
    env = {
        **os.environ,
        "FMOPS_PATHS__PREDICTIONS_DIR": log_dir,
        "FMOPS_SERVING__INFERENCE_THREADS": str(args.inference_threads),
    }
    cmd = [args.python, "-m", "financemath_mlops.serving", "--model-uri", args.model_uri]
    server = subprocess.Popen([*cmd, "--port", str(port)], env=env, cwd=ROOT)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 180:
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                sys.exit(f"the service exited with {server.returncode}")
            time.sleep(0.25)
        else:
            sys.exit("the service was not ready within 180 s")
        ready_s = time.monotonic() - started
        with Sampler(psutil.Process(server.pid)) as sampler:
            rows = [
                phase(sampler, "idle (model loaded)", lambda: time.sleep(5) or 0, 5),
                phase(sampler, "1 client", lambda: load(base, 1, args.seconds), args.seconds),
                phase(
                    sampler,
                    f"{args.concurrency} clients",
                    lambda: load(base, args.concurrency, args.seconds),
                    args.seconds,
                ),
            ]
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(log_dir, ignore_errors=True)
    idle = rows[0]["rss_mib_peak"]
    for row in rows:
        row["rss_vs_idle"] = round(row["rss_mib_peak"] / idle, 2)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "server_python": args.python,
        "inference_threads": args.inference_threads,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "model_uri": args.model_uri,
        "ready_s": round(ready_s, 1),
        "phases": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ready in {ready_s:.1f} s (baseline: the idle service)")
    print(f"{'phase':<22} {'peak RSS MiB':>12} {'x idle':>7} {'CPU cores':>9} {'req/s':>7}")
    for r in rows:
        print(
            f"{r['phase']:<22} {r['rss_mib_peak']:>12} {r['rss_vs_idle']:>7} "
            f"{r['cpu_cores']:>9} {r['requests_per_s']:>7}"
        )
    print(f"(written to {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
