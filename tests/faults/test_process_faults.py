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

from financemath_mlops.features.build import FeatureError
from financemath_mlops.flows.stages import features_stage, ingest_stage
from financemath_mlops.predict.batch import predict_file
from financemath_mlops.synthetic.sample import generate_sample
from tests.conftest import TrainedModel, pipeline_settings
from tests.faults.conftest import HEAD_STARTS, copy_fault_features, head_start
from tests.helpers import REPO_ROOT, tail
from tests.integration.test_dask_features import settings_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]

DASK_ROWS = 96
DASK_PARTITION_ROWS = 8  # 12 partitions: the kill lands with some written and some to come
KILL_TIMEOUT_S = 300  # the first partitions load the model: minutes on a loaded machine


# --- Dask ------------------------------------------------------------------------------------


@dataclass
class Cluster:
    address: str
    watcher: Any  # a distributed.Client of the test's own: finds the workers' pids


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A real LocalCluster: 2 worker processes (each under a nanny that restarts it) x 1 thread."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as running,
        Client(running) as watcher,
    ):  # fmt: skip
        yield Cluster(running.scheduler_address, watcher)


def _set_allowed_failures(value: int, dask_scheduler: Any) -> int:
    previous, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, value
    return previous


@contextlib.contextmanager
def allowed_failures(cluster: Cluster, value: int) -> Iterator[None]:
    """The running scheduler's distributed.scheduler.allowed-failures set to ``value`` for a
    while (the scheduler reads it at each worker death): the module's cluster serves, no second
    cluster to start (half a minute of workers loading the embedder on 2 busy cores)."""
    previous = cluster.watcher.run_on_scheduler(_set_allowed_failures, value)
    try:
        yield
    finally:
        cluster.watcher.run_on_scheduler(_set_allowed_failures, previous)


def hold_partition_plugin(index: int, pid_file: str, hold_s: float) -> Any:
    """A Dask worker plugin that holds partition ``index`` on the first worker to start it: at
    its ``ready -> executing`` transition it writes the worker's pid to ``pid_file`` and blocks
    the worker's event loop, so the partition cannot finish (nor be reported) until the test's
    killer SIGKILLs that pid. Once only, across processes (``O_EXCL``): the rescheduled partition
    runs normally. Built in a function so cloudpickle ships the class by value to the workers.

    Why not watch ``Client.processing()`` and kill whoever runs a partition: a partition takes
    milliseconds to minutes, so a poll misses it on a fast or a loaded machine (a real failure:
    "no worker was running partition 4 or later"); a held partition cannot be missed."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class HoldPartition(WorkerPlugin):
        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            name = str(key)
            if finish != "executing" or not name.startswith("partition-"):
                return
            if name.rpartition("-")[2] != str(index):
                return
            try:
                fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return  # held (and killed) once already: the rerun goes through
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            time.sleep(hold_s)  # bounded: the killer's SIGKILL ends this within milliseconds

    return HoldPartition()


class WorkerKiller(threading.Thread):
    """SIGKILL the worker that holds partition ``after`` (see :func:`hold_partition_plugin`), so
    earlier partitions may be done and written and later ones are still to come."""

    def __init__(self, pid_file: Path, after: int) -> None:
        super().__init__(daemon=True)
        self.pid_file, self.after = pid_file, after
        self.killed: dict[str, Any] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopped.is_set():
            text = self.pid_file.read_text() if self.pid_file.is_file() else ""
            if text.strip():  # an empty file: the pid is being written
                pid = int(text)
                os.kill(pid, signal.SIGKILL)
                self.killed = {"pid": pid, "partition": self.after}
                return
            time.sleep(0.02)


@contextlib.contextmanager
def killing_a_worker(cluster: Cluster, after: int = 4) -> Iterator[WorkerKiller]:
    """Hold partition ``after`` on the worker that starts it and SIGKILL that worker by pid."""
    import tempfile
    import uuid

    pid_file = Path(tempfile.gettempdir()) / f"fmops-dask-hold-{uuid.uuid4().hex}.pid"
    name = f"hold-partition-{pid_file.stem}"
    cluster.watcher.register_plugin(hold_partition_plugin(after, str(pid_file), KILL_TIMEOUT_S),
                                    name=name)  # fmt: skip
    killer = WorkerKiller(pid_file, after)
    killer.start()
    try:
        yield killer
    finally:
        killer.stopped.set()
        killer.join(timeout=10)
        try:
            cluster.watcher.unregister_worker_plugin(name)
        except Exception:  # left registered, it holds nothing while its pid file is there
            pass
        else:
            pid_file.unlink(missing_ok=True)
    assert killer.killed, f"no worker started partition {after}: nothing was killed"
    with pytest.raises(ProcessLookupError):
        os.kill(killer.killed["pid"], 0)  # really dead


@pytest.fixture(scope="module")
def dask_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("dask-faults")
    ingest_stage(pipeline_settings(workdir, rows=DASK_ROWS, seed=7))
    return workdir


def features_settings(workdir: Path, name: str, **features: Any) -> Any:
    return settings_for(
        workdir, name, rows=DASK_ROWS, seed=7, partition_rows=DASK_PARTITION_ROWS,
        embedding={"threads": 1}, **features,
    )  # fmt: skip


@pytest.fixture(scope="module")
def features_without_fault(dask_workdir: Path) -> Path:
    """The table the local executor builds from the same records (its own fresh cache)."""
    given = features_settings(dask_workdir, "local")
    return features_stage(given).output


@pytest.mark.fault_row("features-dask-worker-killed")
def test_features_survive_a_killed_dask_worker(
    cluster: Cluster, dask_workdir: Path, features_without_fault: Path
) -> None:
    settings = features_settings(
        dask_workdir, "dask", executor="dask", dask_address=cluster.address
    )
    with killing_a_worker(cluster):
        summary = features_stage(settings)
    expected, got = pd.read_parquet(features_without_fault), pd.read_parquet(summary.output)
    assert got["question_id"].tolist() == expected["question_id"].tolist()
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-6)
    assert summary.rows == DASK_ROWS
    assert summary.extra["partitions"] == DASK_ROWS // DASK_PARTITION_ROWS


@pytest.mark.fault_row("features-dask-worker-killed-repeatedly")
def test_features_fail_cleanly_when_dask_gives_up_on_a_partition(
    cluster: Cluster, dask_workdir: Path, features_without_fault: Path
) -> None:
    strict = cluster
    with allowed_failures(strict, 0):  # the first death is one too many
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
            features_stage(settings)
    message = str(raised.value)
    assert f"the Dask cluster (scheduler {strict.address}) lost partition" in message
    assert "KilledWorker" in message and "previous output is kept" in message
    assert raised.value.exit_code == 1  # the command was right: rerun it
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


@pytest.mark.fault_row("predict-dask-worker-killed")
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
    local = predict_file(settings.predict, settings.mlflow, path, tmp_path / "local.parquet", uri)
    settings.predict.executor, settings.predict.dask_address = "dask", cluster.address
    with killing_a_worker(cluster):
        summary = predict_file(
            settings.predict, settings.mlflow, path, tmp_path / "dask.parquet", uri
        )

    assert summary.read == lines == summary.predicted + summary.rejected
    assert (summary.predicted, summary.rejected) == (PREDICT_GOOD_ROWS, 4)
    rejects = summary.rejects_path.read_text(encoding="utf-8").splitlines()
    assert len(rejects) == summary.rejected and all("reason" in r for r in rejects)
    got, expected = pd.read_parquet(summary.output), pd.read_parquet(local.output)
    assert got["question_id"].tolist() == good_ids  # each once, in input order
    pd.testing.assert_series_equal(got["prediction"], expected["prediction"], rtol=1e-6)


# --- SIGKILL of training ---------------------------------------------------------------------

TRAIN_TIMEOUT_S = 240
# Kill points spread over a run, each the moment its sign is seen from outside (the run's log,
# the store's tables, the artefact folder), so each lands in its phase however loaded the machine.
KILL_POINTS = (
    "0.5s",  # importing
    "final-fit",  # the log says the final model is being fitted (after CV)
    "run-artefacts",  # the new MLflow run's first artefact folder exists (the run is open)
    "model-upload",  # the new logged model's first artefact file exists
    "version-registered",  # the new version's registry row exists, @challenger not moved
    "challenger-moved",  # @challenger points at the new version (the pointer not yet written)
)


def store_scalar(db: Path, sql: str) -> int:
    rows = store_query(db, sql)
    return int(rows[0][0] or 0) if rows else 0


def point_reached(point: str, workdir: Path, log: Path, begun: float, before: dict) -> bool:
    """Whether the training run started at ``begun`` shows the sign of ``point``."""
    db = workdir / "mlruns" / "mlflow.db"
    if point == "0.5s":
        return time.monotonic() - begun >= 0.5
    if point == "final-fit":
        return "fitting the final model" in log.read_text(errors="replace")[before["log"] :]
    if point == "run-artefacts":  # a folder, not the database: SQLite reads fail while it writes
        root = workdir / "mlruns" / "artifacts"
        return any(p.name not in before["runs"] for p in root.iterdir() if p.name != "models")
    if point == "model-upload":
        models = workdir / "mlruns" / "artifacts" / "models"
        return any(
            p.name not in before["models"] and any(q.is_file() for q in p.rglob("*"))
            for p in (models.iterdir() if models.is_dir() else [])
        )
    if point == "version-registered":
        return store_scalar(db, "select max(version) from model_versions") > before["version"]
    challenger = "select max(version) from registered_model_aliases where alias = 'challenger'"
    return store_scalar(db, challenger) > before["version"]


@dataclass
class Killed:
    point: str  # when it was killed
    seconds: float  # after start
    exit_code: int | None
    versions: dict[str, dict[str, Any]]  # version -> {aliases, complete, missing}
    running_runs: int  # MLflow runs left RUNNING by the killed process


@dataclass
class Sweep:
    model_name: str
    tracking_uri: str
    killed: list[Killed]
    rerun_version: str
    rerun: dict[str, dict[str, Any]]
    seconds: float
    lock_left: dict[str, Any] | None  # the alias lock a kill inside a move left behind


def training_env(workdir: Path) -> dict[str, str]:
    from tests.helpers import cli_env

    return cli_env(
        FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
        FMOPS_PATHS__HF_CACHE_DIR=str(REPO_ROOT / ".cache" / "hf"),
        FMOPS_MLFLOW__TRACKING_URI=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
        FMOPS_MLFLOW__ARTIFACT_ROOT=str(workdir / "mlruns" / "artifacts"),
        FMOPS_TRAINING__CV_FOLDS="3",
        MLFLOW_DISABLE_TELEMETRY="true",
    )


# The sweep runs in the background (a head start) under `nice`: its trainings take the CPU the
# rows in the foreground leave idle, so they never slow a row that measures a time bound. Its
# kill points are events seen from outside, so a slower run is killed in the same phase.
SWEEP_NICE = 10


def start_training(workdir: Path, log: Path) -> Any:
    """`python -m financemath_mlops.training` (``nice`` execs it: the pid is Python's)."""
    import subprocess
    import sys

    with log.open("ab") as out:
        return subprocess.Popen(
            ["nice", "-n", str(SWEEP_NICE), sys.executable, "-m", "financemath_mlops.training"],
            cwd=workdir, env=training_env(workdir), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def store_query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the tracking database as it is now (read-only; a busy database reads as empty)."""
    import sqlite3

    if not db.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
            return c.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def file_uri_path(uri: str) -> Path:
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)


def version_files(client: Any, name: str, version: str) -> dict[str, set[str]]:
    """The files (relative paths) of a version's model folder and of its run's artefacts."""
    found = client.get_model_version(name, version)
    model_id = found.source.removeprefix("models:/")
    folders = {
        "model": file_uri_path(client.get_logged_model(model_id).artifact_location),
        "run": file_uri_path(client.get_run(found.run_id).info.artifact_uri),
    }
    return {what: non_empty_files(root) for what, root in folders.items()}


def non_empty_files(root: Path) -> set[str]:
    """Relative paths of the non-empty files under root; the embedding bundle's folder (named
    after its export, which may differ between two runs) is written as <bundle>."""
    found = set()
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size:
            parts = path.relative_to(root).parts
            if len(parts) == 3 and parts[0] == "artifacts":
                parts = ("artifacts", "<bundle>", parts[2])
            found.add("/".join(parts))
    return found


ALIAS_LOCK_SUFFIX = ".alias-lock"  # runs/aliases.py's lock: a registered model of this name


def holder_of_alias_lock(tracking_uri: str, name: str) -> dict[str, Any] | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        lock = client.get_registered_model(name + ALIAS_LOCK_SUFFIX)
    except MlflowException:
        return None
    return json.loads(lock.description or "{}")


def registry_state(tracking_uri: str, name: str, reference: str) -> dict[str, dict[str, Any]]:
    """Version -> its aliases and whether its files are all there (those of version
    ``reference``, a complete run of the same training)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    aliases: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    expected = version_files(client, name, reference)
    state = {}
    for found in client.search_model_versions(f"name='{name}'"):
        version = str(found.version)
        try:
            files = version_files(client, name, version)
            missing = {
                k: sorted(expected[k] - files[k]) for k in expected if expected[k] - files[k]
            }
        except Exception as exc:  # a logged model or run the killed process never finished
            missing = {"error": [f"{type(exc).__name__}: {exc}"]}
        state[version] = {
            "aliases": sorted(aliases.get(version, [])),
            "complete": not missing,
            "missing": missing,
            "status": found.status,
            "registration": (found.tags or {}).get("fmops.registration"),
        }
    return state


@head_start("training_sweep")
def run_training_sweep(stack: contextlib.ExitStack, workdir: Path) -> Sweep:
    """A complete training run (version 1 @challenger), then `python -m
    financemath_mlops.training` SIGKILLed at each point of the sweep and the registry read after
    each kill, then one rerun to its end. All on the shared feature table (copied: each training
    writes its pointer beside it), in the background from the session's start (a head start):
    the sweep needs nothing from the other rows."""
    started = time.monotonic()
    copy_fault_features(workdir)
    tracking_uri = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    db = workdir / "mlruns" / "mlflow.db"
    log = workdir / "training.log"
    log.touch()
    first = start_training(workdir, log)
    assert first.wait(TRAIN_TIMEOUT_S) == 0, f"the first training failed{tail(log)}"
    (pointer,) = (workdir / "data" / "processed").glob("*.trained.json")
    name = json.loads(pointer.read_text(encoding="utf-8"))["model_name"]

    killed: list[Killed] = []
    for point in KILL_POINTS:
        models = workdir / "mlruns" / "artifacts" / "models"
        before = {
            "log": len(log.read_text(errors="replace")),
            "runs": {p.name for p in (workdir / "mlruns" / "artifacts").iterdir()},
            "models": {p.name for p in models.iterdir()},
            "version": store_scalar(db, "select max(version) from model_versions"),
        }
        process = start_training(workdir, log)
        begun = time.monotonic()
        while process.poll() is None and time.monotonic() - begun < TRAIN_TIMEOUT_S:
            if point_reached(point, workdir, log, begun, before):
                break
            time.sleep(0.005)
        seconds = time.monotonic() - begun
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        code = process.wait(10)
        running = store_scalar(db, "select count(*) from runs where status = 'RUNNING'")
        killed.append(
            Killed(point, seconds, code, registry_state(tracking_uri, name, "1"), running)
        )

    # A kill inside an alias move leaves runs/aliases.py's lock (a registered model) behind; its
    # holder ran on this host and is gone, so the rerun takes it over at once (no manual step).
    lock_left = holder_of_alias_lock(tracking_uri, name)
    if lock_left is not None:
        assert lock_left.get("pid"), lock_left
        with pytest.raises(ProcessLookupError):
            os.kill(int(lock_left["pid"]), 0)  # its holder is the killed run: gone
    process = start_training(workdir, log)
    assert process.wait(TRAIN_TIMEOUT_S) == 0, f"the rerun after the sweep failed{tail(log)}"
    return Sweep(
        lock_left=lock_left,
        model_name=name,
        tracking_uri=tracking_uri,
        killed=killed,
        rerun_version=str(store_scalar(db, "select max(version) from model_versions")),
        rerun=registry_state(tracking_uri, name, "1"),
        seconds=time.monotonic() - started,
    )


@pytest.fixture(scope="module")
def training_sweep(fault_features: Path) -> Iterator[Sweep]:
    """The sweep (:func:`run_training_sweep`, begun at collection), waited for."""
    head = HEAD_STARTS["training_sweep"]
    try:
        yield head.result()
    finally:
        head.close()


@pytest.mark.fault_row("training-sigkill-sweep")
def test_a_killed_training_run_never_leaves_an_alias_on_an_incomplete_version(
    training_sweep: Sweep,
) -> None:
    sweep = training_sweep
    report = "\n".join(
        f"  {k.point:>20} killed at {k.seconds:5.1f}s exit {k.exit_code}: "
        + ", ".join(
            f"v{v} {'+'.join(s['aliases']) or '-'} {'complete' if s['complete'] else s['missing']}"
            for v, s in sorted(k.versions.items(), key=lambda i: int(i[0]))
        )
        + f" ({k.running_runs} runs RUNNING)"
        for k in sweep.killed
    )
    print(
        f"\nSIGKILL sweep of training ({len(sweep.killed)} kills, {sweep.seconds:.0f}s in all):"
        f"\n{report}\n  alias lock left: {sweep.lock_left}"
    )
    assert [k.point for k in sweep.killed] == list(KILL_POINTS)
    assert all(k.exit_code == -signal.SIGKILL for k in sweep.killed), (
        f"every point must land before the run ends:\n{report}"
    )
    for k in sweep.killed:
        for version, state in k.versions.items():
            if state["aliases"]:
                assert state["complete"], f"{k.point}: v{version} {state}\n{report}"
        holders = [v for v, s in k.versions.items() if "challenger" in s["aliases"]]
        assert len(holders) == 1, f"{k.point}: @challenger lost\n{report}"
    by_point = {k.point: k for k in sweep.killed}
    registered = by_point["version-registered"]
    orphan = max(registered.versions, key=int)  # registered, never aliased: never served
    assert registered.versions[orphan]["complete"], report
    assert registered.versions[orphan]["registration"] == "pending-alias", registered.versions
    assert orphan not in [v for v, s in registered.versions.items() if s["aliases"]], report
    moved = by_point["challenger-moved"]
    assert moved.versions[max(moved.versions, key=int)]["aliases"] == ["challenger"], report

    # The rerun completes and moves @challenger to its own, complete version.
    final = sweep.rerun[sweep.rerun_version]
    assert final["aliases"] == ["challenger"] and final["complete"], sweep.rerun
    assert int(sweep.rerun_version) == int(max(moved.versions, key=int)) + 1, sweep.rerun
    assert final["registration"] == "complete", final
    assert_refused_by_number(sweep, orphan)


def assert_refused_by_number(sweep: Sweep, version: str) -> None:
    """What the service, evaluation and export resolve: the half-registered version is refused."""
    import mlflow

    from financemath_mlops.runs.store import TrackingError, resolve

    uris = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(sweep.tracking_uri)
    mlflow.set_registry_uri(sweep.tracking_uri)
    try:
        with pytest.raises(TrackingError, match="half-registered"):
            resolve(f"models:/{sweep.model_name}/{version}")
    finally:
        mlflow.set_tracking_uri(uris[0])
        mlflow.set_registry_uri(uris[1])


# --- Prefect ---------------------------------------------------------------------------------

PREFECT_START_TIMEOUT_S = 120
FLOW_TIMEOUT_S = 400
FLOW_ROWS = 120
CRASH_MARKED_S = 60


@dataclass
class PrefectServer:
    """A real `prefect server start` on 127.0.0.1 that the test can stop and start again (the
    same port and PREFECT_HOME: its SQLite database survives a restart)."""

    home: Path
    port: int
    process: Any = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    def start(self) -> float:
        import httpx

        from tests.helpers import VENV_BIN, cli_env, start_process, wait_for
        from tests.integration.prefect_server import QUIET_SERVER_ENV

        env = cli_env(PREFECT_HOME=str(self.home), **QUIET_SERVER_ENV)
        env.pop("PREFECT_API_URL", None)
        command = [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                   "--port", str(self.port)]  # fmt: skip
        begun = time.monotonic()
        self.process = start_process(command, env, self.home, self.log)
        wait_for(
            lambda: httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200,
            PREFECT_START_TIMEOUT_S, "prefect server to be healthy", self.process, self.log,
            interval=0.3,
        )  # fmt: skip
        return time.monotonic() - begun

    def stop(self) -> None:
        from tests.helpers import stop_process_group

        if self.process is not None:
            stop_process_group(self.process)
            self.process = None

    def post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        for attempt in range(5):  # a loaded server answers 503 while its SQLite is busy
            response = httpx.post(f"{self.api_url}/{path}", json=body, timeout=30)
            if response.status_code != 503:
                break
            time.sleep(2**attempt)
        response.raise_for_status()
        return response.json()


@head_start("prefect_server")
def start_prefect_server(stack: contextlib.ExitStack, workdir: Path) -> PrefectServer:
    """One Prefect server for the module's rows, started in the background (a head start)."""
    from tests.helpers import free_port

    server = PrefectServer(workdir, free_port())
    stack.callback(server.stop)
    server.start()
    return server


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[PrefectServer]:
    head = HEAD_STARTS["prefect_server"]
    try:
        yield head.result()
    finally:
        head.close()


def flow_env(workdir: Path, api_url: str) -> dict[str, str]:
    """The pipeline CLI's environment: data, MLflow and reports under workdir, shared caches."""
    env = training_env(workdir)
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(workdir / "prefect-client"),
        FMOPS_PATHS__REPORTS_DIR=str(workdir / "reports"),
    )
    return env


def task_runs(
    server: PrefectServer, name: str, flow_run: str | None = None
) -> list[dict[str, Any]]:
    """The task runs whose name holds ``name`` (of one flow run if given: the module's server
    also holds the other row's runs, and a task left RUNNING there must not trigger this one)."""
    body: dict[str, Any] = {"task_runs": {"name": {"like_": name}}}
    if flow_run is not None:
        body["flow_runs"] = {"id": {"any_": [flow_run]}}
    return server.post("task_runs/filter", body)


def flow_run_states(server: PrefectServer) -> list[str]:
    return [run["state_type"] for run in server.post("flow_runs/filter", {})]


@pytest.mark.fault_row("prefect-server-restarted-mid-flow")
def test_the_flow_runs_through_a_prefect_server_restart(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.helpers import tail, wait_for

    log = tmp_path / "flow.log"
    with log.open("wb") as out:
        flow = subprocess.Popen(
            [sys.executable, "-m", "financemath_mlops.flows", "--source", "sample",
             "--rows", str(FLOW_ROWS)],
            cwd=tmp_path, env=flow_env(tmp_path, prefect_server.api_url), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: any(r["state_type"] == "RUNNING" for r in task_runs(prefect_server, "train")),
            FLOW_TIMEOUT_S, "the training task to run", flow, log, interval=0.2,
        )  # fmt: skip
        prefect_server.stop()
        down = time.monotonic()
        restart_seconds = prefect_server.start()
        print(
            f"\nPrefect server down {time.monotonic() - down:.1f}s (start {restart_seconds:.1f}s)"
        )
        code = flow.wait(FLOW_TIMEOUT_S)
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
            flow.wait(10)
    output = tail(log, 6000)
    said = [line for line in log.read_text(errors="replace").splitlines()
            if any(w in line for w in ("WARNING", "ERROR", "Error", "retry", "Retry"))]  # fmt: skip
    print("what the flow said meanwhile:\n" + "\n".join(line[:300] for line in said[:20]))
    assert code == 0, f"the flow failed across the restart (exit {code}){output}"
    assert "COMPLETED" in flow_run_states(prefect_server), output
    (trained,) = [r for r in task_runs(prefect_server, "train") if r["state_type"] == "COMPLETED"]
    assert trained, output
    assert (tmp_path / "models" / "serving" / "MLmodel").is_file(), output


def flow_config(workdir: Path) -> Path:
    """A config whose every path is under workdir (a deployment's run starts in the checkout)."""
    import yaml

    data = {
        "paths": {
            **{k: str(workdir / k) for k in ("raw_dir", "interim_dir", "processed_dir",
                                              "predictions_dir", "reports_dir")},
            "serving_model_dir": str(workdir / "models" / "serving"),
            "cache_dir": str(REPO_ROOT / ".cache"),
            "hf_cache_dir": str(REPO_ROOT / ".cache" / "hf"),
        },
        "ingestion": {"source": "sample", "rows": FLOW_ROWS},
        "mlflow": {
            "tracking_uri": f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
            "artifact_root": str(workdir / "mlruns" / "artifacts"),
        },
        "training": {"cv_folds": 3},
    }  # fmt: skip
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def start_worker(server: PrefectServer, pool: str, workdir: Path, name: str) -> Any:
    from tests.helpers import VENV_BIN, cli_env, start_process

    env = cli_env(
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(workdir / f"{name}-home"),
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_LOGGING_LEVEL="INFO",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    command = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool, "--name", name]
    return start_process(command, env, workdir, workdir / f"{name}.log")


def flow_run(server: PrefectServer, run_id: str) -> dict[str, Any]:
    import httpx

    response = httpx.get(f"{server.api_url}/flow_runs/{run_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def schedule_run_now(server: PrefectServer, deployment_id: str) -> str:
    """A flow run of the deployment, Scheduled for now (what the cron schedule makes at 02:00)."""
    from datetime import UTC, datetime

    body = {"state": {"type": "SCHEDULED", "state_details": {
        "scheduled_time": datetime.now(UTC).isoformat()}}}  # fmt: skip
    return server.post(f"deployments/{deployment_id}/create_flow_run", body)["id"]


@pytest.mark.fault_row("prefect-worker-killed-mid-run")
def test_a_killed_worker_s_run_is_marked_and_the_next_run_completes(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    from tests.helpers import stop_process_group, tail, wait_for
    from tests.integration.prefect_server import deploy_to_new_pool

    pool = "faults-pool"
    deployment_id = deploy_to_new_pool(
        prefect_server.api_url, pool, {"config": str(flow_config(tmp_path))}
    )
    worker = start_worker(prefect_server, pool, tmp_path, "worker-1")
    workers = [worker]
    first = schedule_run_now(prefect_server, deployment_id)
    try:
        # The features task running, or just done (with the embeddings cached by the row before,
        # it can finish between two polls on a fast machine): either way the run is mid-flow,
        # with training and the later stages still to come.
        wait_for(
            lambda: any(
                r["state_type"] in ("RUNNING", "COMPLETED")
                for r in task_runs(prefect_server, "build", first)
            ),
            FLOW_TIMEOUT_S, "the scheduled run's features task", worker,
            tmp_path / "worker-1.log", interval=0.2,
        )  # fmt: skip
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        killed_at = time.monotonic()
        # The replacement starts now (seconds of imports) while the crash is being marked: a
        # worker takes Scheduled runs only, so it never touches the crashed one.
        second_worker = start_worker(prefect_server, pool, tmp_path, "worker-2")
        workers.append(second_worker)
        crashed = wait_for(
            lambda: flow_run(prefect_server, first)["state_type"] not in ("RUNNING", "PENDING"),
            CRASH_MARKED_S, "the killed worker's run to be marked", interval=0.5,
        )  # fmt: skip
        state = flow_run(prefect_server, first)["state"]
        print(
            f"\nthe killed worker's run: {state['type']} after "
            f"{time.monotonic() - killed_at:.1f}s ({state.get('message')})"
        )
        assert crashed and state["type"] == "CRASHED", state

        second = schedule_run_now(prefect_server, deployment_id)
        wait_for(
            lambda: flow_run(prefect_server, second)["state_type"] in ("COMPLETED", "FAILED",
                                                                       "CRASHED"),
            FLOW_TIMEOUT_S, "the next run", second_worker, tmp_path / "worker-2.log", interval=1,
        )  # fmt: skip
        assert flow_run(prefect_server, second)["state_type"] == "COMPLETED", tail(
            tmp_path / "worker-2.log"
        )
    finally:
        for started in workers:
            stop_process_group(started)
