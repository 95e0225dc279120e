"""Chunked predictions: what a batch costs in the pool's chunks against one predictor call.

The service runs a request as chunks of a few records (serving/inference.py, `record_chunks`),
each its own job, so a batch gives way to other requests between chunks and stops there when
its client hangs up. This measures the price (or gain) in CPU: per 64-record batch, one call
against the chunks, and the largest chunk against one lone record (what a /predict queued behind
a batch waits for at most). CPU time of the calling thread with a single-threaded ONNX session
(the pinned one-core server of benchmarks/attack.py), so other load on the machine barely
matters. Batches: the validation split (when ../shared is there), the synthetic sample, 64
copies of the attack probe's body, and the attack corpus's batch of ragged tables.

    python benchmarks/chunks.py      # ~2 minutes on 2 cores (most of it training a small model)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.serving import machine, sample_requests, train_model  # noqa: E402

from corpora.hostile import QUESTION, ragged_table  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "chunks.json"
VALIDATION = REPO_ROOT.parent / "shared" / "data" / "financemath" / "validation.json"
BATCH = 64


def cpu_ms(call: Any, passes: int) -> float:
    """Least CPU time of ``passes`` runs of ``call`` on this thread, in ms."""
    best = float("inf")
    for _ in range(passes):
        started = time.thread_time()
        call()
        best = min(best, time.thread_time() - started)
    return round(best * 1000, 1)


def batches() -> dict[str, list[Any]]:
    from financemath_mlops.records import RecordInput

    def records(rows: list[dict[str, Any]]) -> list[Any]:
        return [RecordInput(r["question"], tuple(r.get("tables") or ()), r.get("topic")) for r in rows]  # fmt: skip

    probe_table = "| Year | Cash flow |\n|---|---:|\n| 1 | 50 |\n| 2 | 50 |\n| 3 | 1,050 |"
    found = {
        "synthetic sample": records(sample_requests(BATCH, seed=7)),
        "64 x the attack probe": [RecordInput(QUESTION, (probe_table,))] * BATCH,
        "40 x ten ragged tables (attack)": [RecordInput(QUESTION, (ragged_table(200, 300),) * 10)]
        * 40,
    }
    if VALIDATION.is_file():
        rows = json.loads(VALIDATION.read_text(encoding="utf-8"))
        for start in (0, 64, 128):
            found[f"validation rows {start}-{start + BATCH - 1}"] = records(rows[start : start + BATCH])  # fmt: skip
    return found


def measure(predictor: Any, records: list[Any], passes: int) -> dict[str, Any]:
    from financemath_mlops.serving.inference import record_chunks

    chunks = [[records[i] for i in rows] for rows in record_chunks(records)]
    whole = cpu_ms(lambda: predictor.predict(records), passes)
    chunked = cpu_ms(lambda: [predictor.predict(chunk) for chunk in chunks], passes)
    largest = max(chunks, key=lambda c: sum(len(r.question) for r in c) + len(c))
    return {
        "records": len(records),
        "chunks": len(chunks),
        "one_call_cpu_ms": whole,
        "chunked_cpu_ms": chunked,
        "chunked_vs_one_call": round(chunked / whole, 2),
        "largest_chunk_cpu_ms": cpu_ms(lambda: predictor.predict(largest), passes),
        "lone_record_cpu_ms": cpu_ms(lambda: predictor.predict(records[:1]), passes),
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| batch | records | chunks | one call CPU ms (baseline) | chunked CPU ms (x one call) "
        "| largest chunk CPU ms | one record CPU ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["batches"].items():
        lines.append(
            f"| {name} | {row['records']} | {row['chunks']} | {row['one_call_cpu_ms']} "
            f"| {row['chunked_cpu_ms']} ({row['chunked_vs_one_call']:.2f}) "
            f"| {row['largest_chunk_cpu_ms']} | {row['lone_record_cpu_ms']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passes", type=int, default=3, help="runs per measurement (least CPU)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import mlflow

    from financemath_mlops import runs
    from financemath_mlops.model.predictor import with_threads
    from financemath_mlops.serving.inference import CHUNK_CHARS, CHUNK_RECORDS

    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fmops-chunks-") as tmp:
        print("training a small model on the synthetic sample ...", flush=True)
        model_uri, tracking_uri = train_model(Path(tmp))
        mlflow.set_tracking_uri(tracking_uri)
        predictor = runs.load_pyfunc(model_uri).unwrap_python_model().predictor
        predictor = with_threads(predictor, 1)
        predictor.predict(batches()["synthetic sample"][:4])  # warm-up
        rows = {}
        for name, records in batches().items():
            rows[name] = measure(predictor, records, args.passes)
            print(f"{name}: {rows[name]}", flush=True)
    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(load_at_start),
        "setup": {
            "chunk": f"at most {CHUNK_RECORDS} records and {CHUNK_CHARS} characters",
            "onnx_threads": 1,
            "cpu": "time.thread_time of the calling thread, least of the passes",
            "passes": args.passes,
            "baseline": "one predictor call with the whole batch",
        },
        "batches": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
