"""The fault matrix's process rows: processes the pipeline runs on, killed by pid for real.

- A Dask worker (a real ``distributed.LocalCluster`` with worker processes) SIGKILLed while the
  features stage and batch prediction run partitions on it: the scheduler reschedules the lost
  partitions on the surviving and the restarted worker, and the output equals the one built
  without the fault. A worker killed more often than ``distributed.scheduler.allowed-failures``
  (here 0, so once is enough) ends the stage with one line naming Dask and the scheduler address,
  the previous output kept.
- The Prefect server restarted during a flow run, and a worker killed during a deployment's run.
- ``python -m financemath_mlops.training`` SIGKILLed at points spread over its run (a sweep): no
  alias ever points at a version whose artefacts are missing, and a rerun moves @challenger.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from financemath_mlops.features.build import FeatureError, build_features
from financemath_mlops.ingestion import ingest
from financemath_mlops.ingestion.synthetic import generate_sample
from financemath_mlops.predict.batch import predict_file
from tests.conftest import TrainedModel, pipeline_settings
from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.faults, pytest.mark.integration]

DASK_ROWS = 96
DASK_PARTITION_ROWS = 8  # 12 partitions: the kill lands with some written and some to come
KILL_TIMEOUT_S = 60


# --- Dask ------------------------------------------------------------------------------------


@dataclass
class Cluster:
    address: str
    watcher: Any  # a distributed.Client of the test's own: finds the workers' pids


@contextlib.contextmanager
def local_cluster(allowed_failures: int | None = None) -> Iterator[Cluster]:
    """A real LocalCluster: 2 worker processes (each under a nanny that restarts it) x 1 thread."""
    import dask
    from distributed import Client, LocalCluster

    config = {} if allowed_failures is None else {
        "distributed.scheduler.allowed-failures": allowed_failures
    }  # fmt: skip
    with (
        dask.config.set(config),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as watcher,
    ):  # fmt: skip
        yield Cluster(cluster.scheduler_address, watcher)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with local_cluster() as running:
        yield running


class WorkerKiller(threading.Thread):
    """SIGKILL the worker process running a partition once partition ``after`` is running (so
    earlier partitions are done and written, and later ones are still to come)."""

    def __init__(self, watcher: Any, after: int) -> None:
        super().__init__(daemon=True)
        self.watcher, self.after = watcher, after
        self.killed: dict[str, Any] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopped.is_set():
            for address, keys in self.watcher.processing().items():
                running = [int(str(k).rpartition("-")[2]) for k in keys if "partition-" in str(k)]
                if running and max(running) >= self.after:
                    pid = self.watcher.run(os.getpid, workers=[address])[address]
                    os.kill(pid, signal.SIGKILL)
                    self.killed = {"address": address, "pid": pid, "partitions": running}
                    return
            time.sleep(0.02)


@contextlib.contextmanager
def killing_a_worker(cluster: Cluster, after: int = 4) -> Iterator[WorkerKiller]:
    killer = WorkerKiller(cluster.watcher, after)
    killer.start()
    try:
        yield killer
    finally:
        killer.stopped.set()
        killer.join(timeout=10)
    assert killer.killed, f"no worker was running partition {after} or later: nothing was killed"
    with pytest.raises(ProcessLookupError):
        os.kill(killer.killed["pid"], 0)  # really dead


def fresh_cache(root: Path) -> Path:
    """A cache folder with no embeddings (so the run really embeds) sharing the ONNX export."""
    shared_onnx = REPO_ROOT / ".cache" / "onnx"
    shared_onnx.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True)
    (root / "onnx").symlink_to(shared_onnx, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def dask_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("dask-faults")
    ingest(pipeline_settings(workdir, rows=DASK_ROWS, seed=7))
    return workdir


def features_settings(workdir: Path, name: str, **features: Any) -> Any:
    return pipeline_settings(
        workdir,
        rows=DASK_ROWS,
        seed=7,
        paths={"cache_dir": fresh_cache(workdir / f"cache-{name}")},
        features={
            "partition_rows": DASK_PARTITION_ROWS,
            "output": workdir / name / "features.parquet",
            "embedding": {"threads": 1},
            **features,
        },
    )


@pytest.fixture(scope="module")
def features_without_fault(dask_workdir: Path) -> Path:
    """The table the local executor builds from the same records (its own fresh cache)."""
    return build_features(features_settings(dask_workdir, "local"), show_progress=False).output


@pytest.mark.fault_row(
    id="features-dask-worker-killed",
    where="features stage, Dask executor",
    fault="a Dask worker process SIGKILLed while it runs a partition",
    sees="nothing: the scheduler reschedules the lost partition on a live worker (the nanny "
    "restarts the killed one); the stage exits 0",
    kept="the table equals the one built without the fault (same rows, order and values)",
    recover="nothing to do",
    bound="the partition's own time again, plus a worker restart (seconds)",
    retry="Dask's: a lost partition is rerun up to distributed.scheduler.allowed-failures (3) "
    "times (a partition is pure: idempotent)",
    runbook="none needed; if workers keep dying, check their memory (`dmesg`, the nanny's log)",
)
def test_features_survive_a_killed_dask_worker(
    cluster: Cluster, dask_workdir: Path, features_without_fault: Path
) -> None:
    settings = features_settings(
        dask_workdir, "dask", executor="dask", dask_address=cluster.address
    )
    with killing_a_worker(cluster):
        summary = build_features(settings, show_progress=False)
    expected, got = pd.read_parquet(features_without_fault), pd.read_parquet(summary.output)
    assert got["question_id"].tolist() == expected["question_id"].tolist()
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-6)
    assert summary.rows == DASK_ROWS
    assert summary.extra["partitions"] == DASK_ROWS // DASK_PARTITION_ROWS


@pytest.mark.fault_row(
    id="features-dask-worker-killed-repeatedly",
    where="features stage, Dask executor",
    fault="a partition's worker killed more often than distributed.scheduler.allowed-failures",
    sees="exit 2: `error: the Dask cluster (scheduler tcp://HOST:PORT) lost partition N: "
    "KilledWorker: ...; nothing was written (the previous output is kept) ...`",
    kept="the previous complete table",
    recover="find why workers die (memory), rerun",
    bound="immediate once Dask gives up on the partition",
    retry="Dask's (allowed-failures), then none",
    runbook="check the workers' memory and logs (`dmesg`); rerun `python -m "
    "financemath_mlops.features --executor dask`, or `--executor local`",
)
def test_features_fail_cleanly_when_dask_gives_up_on_a_partition(
    dask_workdir: Path, features_without_fault: Path
) -> None:
    with local_cluster(allowed_failures=0) as strict:  # the first death is one too many
        settings = features_settings(
            dask_workdir, "dask-strict", executor="dask", dask_address=strict.address
        )
        settings.features_output.parent.mkdir(parents=True)
        previous = features_without_fault.read_bytes()
        settings.features_output.write_bytes(previous)
        with (
            killing_a_worker(strict),
            pytest.raises(FeatureError) as raised,
        ):
            build_features(settings, show_progress=False)
    message = str(raised.value)
    assert f"the Dask cluster (scheduler {strict.address}) lost partition" in message
    assert "KilledWorker" in message and "previous output is kept" in message
    assert settings.features_output.read_bytes() == previous
    assert sorted(p.name for p in settings.features_output.parent.iterdir()) == ["features.parquet"]


PREDICT_GOOD_ROWS = 88


@pytest.fixture(scope="module")
def predict_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], int]:
    """(a JSONL file of good rows and 4 bad ones, the good ids in order, lines in all)."""
    rows = generate_sample(rows=PREDICT_GOOD_ROWS, seed=31)
    bad = [
        json.dumps({"question_id": "empty-question", "question": "  ", "topic": "Accounting"}),
        json.dumps(rows[0]),  # a duplicate id
        json.dumps({"question_id": 7, "question": "Numbers are not ids?", "topic": "Accounting"}),
        "{this line is not json",
    ]
    lines = [json.dumps(r) for r in rows[:40]] + bad + [json.dumps(r) for r in rows[40:]]
    path = tmp_path_factory.mktemp("predict-faults") / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, [str(r["question_id"]) for r in rows], len(lines)


@pytest.mark.fault_row(
    id="predict-dask-worker-killed",
    where="batch prediction, Dask executor",
    fault="a Dask worker process SIGKILLed while it predicts a batch",
    sees="nothing: the lost batch is rescheduled (the restarted worker loads the model again); "
    "the summary still reads `read N = predicted P + rejected R`; exit 0",
    kept="every valid row predicted exactly once, as without the fault; every bad row in "
    "<output stem>.rejects.jsonl with its reason",
    recover="nothing to do",
    bound="the batch's own time again, plus a worker restart and a model load (seconds)",
    retry="Dask's: up to distributed.scheduler.allowed-failures (3) (a batch is pure: "
    "idempotent); more deaths end the stage as features-dask-worker-killed-repeatedly",
    runbook="none needed; if workers keep dying, check their memory (`dmesg`)",
)
def test_batch_prediction_survives_a_killed_dask_worker(
    cluster: Cluster,
    trained_model: TrainedModel,
    predict_input: tuple[Path, list[str], int],
    tmp_path: Path,
) -> None:
    path, good_ids, lines = predict_input
    uri = f"models:/{trained_model.model_name}/{trained_model.version}"
    settings = trained_model.settings.model_copy(deep=True)
    settings.predict.batch_rows = DASK_PARTITION_ROWS
    settings.predict.threads = 1
    local = predict_file(settings, path, tmp_path / "local.parquet", uri)
    settings.predict.executor, settings.predict.dask_address = "dask", cluster.address
    with killing_a_worker(cluster):
        summary = predict_file(settings, path, tmp_path / "dask.parquet", uri)

    assert summary.read == lines == summary.predicted + summary.rejected
    assert (summary.predicted, summary.rejected) == (PREDICT_GOOD_ROWS, 4)
    rejects = summary.rejects_path.read_text(encoding="utf-8").splitlines()
    assert len(rejects) == summary.rejected and all("reason" in r for r in rejects)
    got, expected = pd.read_parquet(summary.output), pd.read_parquet(local.output)
    assert got["question_id"].tolist() == good_ids  # each once, in input order
    pd.testing.assert_series_equal(got["prediction"], expected["prediction"], rtol=1e-6)
