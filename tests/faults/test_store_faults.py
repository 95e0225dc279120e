"""Store rows of the fault matrix: the tracking server and the stores behind it fail under a run.

Real processes only: a throwaway PostgreSQL, moto's S3 API and compose's `mlflow server` (as the
team runs it: PostgreSQL backend, artefacts proxied to S3; tests/integration/team_stores.py),
with our fault proxy (fault_proxy.py) in front of the tracking server and in front of S3.
Training runs as a user runs it: a subprocess, cwd a folder holding a small feature table, the
proxied tracking address and nothing else (no S3 or database credentials).

The promise every row checks: no alias ever points at a version whose artefacts are missing or
incomplete (a version is registered only once its artefacts are uploaded whole, tagged
``fmops.registration=pending-alias`` until @challenger moves to it), and the user sees one
``error:`` line naming the tracking server's address, never a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.conftest import FaultStack, stage_env

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MODEL = "financemath-regressor-sample"  # training on the sample source registers this name
# Small client timeouts for the mid-run rows, so a row costs seconds: the bound they prove is
# runs/store.py's formula, which states the defaults' bound (30 s a request, 3 retries) in the doc.
SHORT_HTTP = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
}


SLOW_S3_S = 0.5  # per S3 request: a slow store, far below the client's 30 s request timeout


def train(
    stack: FaultStack, cwd: Path, timeout: float = 360, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m financemath_mlops.training` against the proxied tracking server, timed (the
    timeout only stops a test gone wrong: generous, a loaded CI machine trains slowly)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "financemath_mlops.training"],
        env=stage_env(stack.tracking_uri, **env), cwd=cwd,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return done, time.perf_counter() - started


def registry_state(stack: FaultStack) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(alias -> version, version -> its tags) of the sample model, read straight from the server."""
    client = stack.client()
    try:
        aliases = dict(client.get_registered_model(MODEL).aliases or {})
    except Exception:  # not registered yet
        return {}, {}
    versions = client.search_model_versions(f"name='{MODEL}'")
    return aliases, {str(v.version): dict(v.tags or {}) for v in versions}


def assert_aliases_served_whole(stack: FaultStack) -> None:
    """Every alias points at a version whose model loads: MLmodel and the booster downloaded
    whole through the server from S3 (the promise: never an alias on an incomplete model)."""
    import mlflow

    aliases, _ = registry_state(stack)
    for alias, version in aliases.items():
        mlflow.set_tracking_uri(stack.direct_uri)
        with_model = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL}/{version}",
            dst_path=str(stack.workdir / f"check-{alias}-{version}-{time.monotonic_ns()}"),
        )
        files = {p.name for p in Path(with_model).rglob("*")}
        assert {"MLmodel", "booster.txt", "model.onnx"} <= files, (alias, version, files)


def run_statuses(stack: FaultStack) -> dict[str, str]:
    from tests.faults.conftest import EXPERIMENT

    client = stack.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return {r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id])}


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert lines, f"no `error:` line (exit {done.returncode}):\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[-1]


@dataclass
class StoreRow:
    """What a store row runs against: the team stack (back to health after the row), the
    module's feature table (the cwd of its trainings), and the registry and the runs as the row
    found them, for what it checks after its fault."""

    stack: FaultStack
    cwd: Path
    before: tuple[dict[str, str], dict[str, dict[str, str]]]  # registry_state
    runs_before: dict[str, str]  # run_statuses

    def train(
        self, timeout: float = 360, **env: str
    ) -> tuple[subprocess.CompletedProcess[str], float]:
        return train(self.stack, self.cwd, timeout, **env)

    def assert_store_failed(
        self, done: subprocess.CompletedProcess[str], doing: str = "training"
    ) -> str:
        """A store that failed under the run: exit 1 (not 2: the command was right) and one
        `error:` line, no traceback, naming the tracking server and what the run was ``doing``."""
        assert done.returncode == 1, done.stderr[-3000:]
        line = error_line(done)
        failed = f"the MLflow tracking server {self.stack.tracking_uri} failed while {doing}"
        assert failed in line, line
        return line

    def assert_one_failed_run(self) -> None:
        """The faulted training's run, and only it, is new and marked FAILED."""
        runs = run_statuses(self.stack)
        new_runs = {k: v for k, v in runs.items() if k not in self.runs_before}
        assert list(new_runs.values()) == ["FAILED"], new_runs

    def assert_challenger_moved(
        self, done: subprocess.CompletedProcess[str], *also_old: str
    ) -> dict[str, dict[str, str]]:
        """A training that worked: @challenger on a new version (none from before the row, nor
        ``also_old``) tagged complete, every alias's model loadable whole; the versions' tags."""
        assert done.returncode == 0, done.stderr[-3000:]
        aliases, versions = registry_state(self.stack)
        assert aliases["challenger"] not in (*also_old, *self.before[1])
        assert versions[aliases["challenger"]].get("fmops.registration") == "complete"
        assert_aliases_served_whole(self.stack)
        return versions


@pytest.fixture()
def store_row(healthy_stack: FaultStack, features_workdir: Path) -> StoreRow:
    """The row's :class:`StoreRow`, the registry and runs read before the row injects a fault."""
    return StoreRow(
        healthy_stack, features_workdir, registry_state(healthy_stack), run_statuses(healthy_stack)
    )


# -- PostgreSQL under `mlflow server` restarts while training logs (first: its rerun leaves
# a @challenger that the later rows show unmoved) --------------------------------------------


@pytest.mark.fault_row("tracking-postgres-restart-during-logging")
def test_postgres_restarting_while_training_logs_fails_the_run_and_a_rerun_works(
    store_row: StoreRow,
) -> None:
    stack = store_row.stack

    def restart() -> None:
        stack.stop_postgres()
        threading.Timer(3, stack.start_postgres).start()

    restarted = stack.tracking.on_request("/runs/log-batch", action=restart)
    done, _ = store_row.train()
    assert restarted.is_set(), "training never logged: the fault was not injected"
    store_row.assert_store_failed(done)
    _wait_for_postgres(stack)
    store_row.assert_one_failed_run()
    assert registry_state(stack) == store_row.before

    store_row.assert_challenger_moved(store_row.train()[0])


# -- the tracking server accepts connections and never answers -----------------------------------


@pytest.mark.fault_row("tracking-hang-at-start")
def test_a_hanging_tracking_server_stops_training_within_the_probe_bound(
    store_row: StoreRow,
) -> None:
    from financemath_mlops.runs.store import PROBE_SECONDS

    stack = store_row.stack
    stack.tracking.set_mode("hang")
    hung = len(stack.tracking.hung)
    done, seconds = store_row.train(timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    gave_up = stack.tracking.hung[hung:]
    assert gave_up, "the probe never asked the hanging server"
    # The probe's budget, seen from the server's side: from its connection to the client
    # giving up. The whole run (in the matrix) adds Python's start-up and exit: about 5 s on an
    # idle machine, more on a loaded one.
    waited = max(end for _, end in gave_up) - min(start for start, _ in gave_up)
    assert waited < PROBE_SECONDS + 4, (waited, seconds)  # + a loaded machine's scheduling
    line = error_line(done)
    address = stack.tracking_uri
    assert f"cannot reach the MLflow tracking server {address}" in line, line
    assert f"no answer to GET {address}/health within 8 s" in line, line


@pytest.mark.fault_row("tracking-hang-mid-run")
def test_a_tracking_server_that_hangs_mid_run_fails_training_within_the_stated_bound(
    store_row: StoreRow,
) -> None:
    from financemath_mlops.runs.store import stage_request_bound_s

    stack = store_row.stack
    injected: list[float] = []

    def hang() -> None:
        injected.append(time.perf_counter())
        stack.tracking.set_mode("hang")

    stack.tracking.on_request("/runs/log-batch", action=hang)
    done, _ = store_row.train(**SHORT_HTTP)
    waited = time.perf_counter() - injected[0] if injected else None
    stack.tracking.set_mode("pass")
    assert waited is not None, "training never logged: the fault was not injected"
    line = store_row.assert_store_failed(done)
    assert "timed out" in line.lower(), line
    # After the fault: the log write (a creating write: one attempt) and the run's end (an
    # idempotent write: retried) = at most two calls' bounds, the formula docs/reliability.md states.
    with pytest.MonkeyPatch.context() as env:
        for key, value in SHORT_HTTP.items():
            env.setenv(key, value)
        bound = 2 * stage_request_bound_s()
    assert bound == pytest.approx(2 * (2 * 3 + 1))
    # + the process's exit on a loaded machine (a retried creating write would add 7 s a call)
    assert waited < bound + 6, (waited, bound)
    assert registry_state(stack) == store_row.before  # no version, no alias moved


# -- PostgreSQL under `mlflow server` stops between registration and the alias move -------------


@pytest.mark.fault_row("tracking-postgres-restart-before-alias")
def test_postgres_stopping_between_registration_and_the_alias_move_leaves_no_alias_on_it(
    store_row: StoreRow,
) -> None:
    stack = store_row.stack
    aliases_before, versions_before = store_row.before
    # The alias move's first request: the audit lock (runs/aliases.py), or the alias itself.
    stopped = stack.tracking.on_request(
        "alias-lock", "/registered-models/alias", action=stack.stop_postgres
    )
    done, seconds = store_row.train()
    assert stopped.is_set(), "training never reached the alias move: the fault was not injected"
    line = store_row.assert_store_failed(done, "taking the alias lock")
    assert "Nothing was moved" in line and "rerun the same command" in line, line
    stack.start_postgres()
    _wait_for_postgres(stack)

    aliases, versions = registry_state(stack)
    assert aliases == aliases_before  # no alias moved
    (half,) = set(versions) - set(versions_before)
    assert versions[half].get("fmops.registration") == "pending-alias", versions[half]
    _assert_refused_by_number(stack, half)

    versions = store_row.assert_challenger_moved(store_row.train()[0], half)
    assert versions[half].get("fmops.registration") == "pending-alias"


def _assert_refused_by_number(stack: FaultStack, version: str) -> None:
    """What the service, evaluation and export resolve: models:/NAME/V is refused for it."""
    import mlflow

    from financemath_mlops.runs.store import TrackingError, resolve

    mlflow.set_tracking_uri(stack.direct_uri)
    mlflow.set_registry_uri(stack.direct_uri)
    with pytest.raises(TrackingError, match="half-registered"):
        resolve(f"models:/{MODEL}/{version}")


def _wait_for_postgres(stack: FaultStack, timeout: float = 90) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(stack.postgres.uri("postgres"), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


# -- the artefact store (S3 API) behind the tracking server ---------------------------------------


def _s3_keys(stack: FaultStack) -> set[str]:
    from tests.integration.team_stores import BUCKET

    return set(stack.s3.keys_in(BUCKET, ""))


@pytest.mark.fault_row("s3-refuses")
def test_s3_refusing_fails_training_before_any_version_is_registered(store_row: StoreRow) -> None:
    stack = store_row.stack
    stack.s3_proxy.set_mode("refuse")
    done, seconds = store_row.train(**SHORT_HTTP)
    store_row.assert_store_failed(done)
    assert registry_state(stack) == store_row.before
    stack.s3_proxy.set_mode("pass")
    store_row.assert_one_failed_run()
    assert_aliases_served_whole(stack)


@pytest.mark.fault_row("s3-cut-mid-upload")
def test_s3_cutting_an_upload_half_way_registers_no_version(store_row: StoreRow) -> None:
    stack = store_row.stack
    keys_before = _s3_keys(stack)
    stack.s3_proxy.set_mode("cut", after_bytes=1_000_000)
    done, seconds = store_row.train(**SHORT_HTTP)
    cuts = stack.s3_proxy.cuts
    stack.s3_proxy.set_mode("pass")
    assert cuts > 0, "no upload was cut: the fault was not injected"
    store_row.assert_store_failed(done)
    new_keys = _s3_keys(stack) - keys_before
    assert new_keys, "nothing of the run landed: the cut was not half-way"
    assert not any(k.endswith("model.onnx") for k in new_keys), sorted(new_keys)
    assert registry_state(stack) == store_row.before
    assert_aliases_served_whole(stack)


@pytest.mark.fault_row("s3-slow")
def test_a_slow_s3_only_slows_training_down(store_row: StoreRow) -> None:
    stack = store_row.stack
    seen_before = len(stack.s3_proxy.requests)
    stack.s3_proxy.set_mode("slow", seconds=SLOW_S3_S)
    done, seconds = store_row.train()
    slowed = len(stack.s3_proxy.requests) - seen_before
    stack.s3_proxy.set_mode("pass")
    assert slowed >= 3, f"only {slowed} S3 requests went through the slow proxy"
    store_row.assert_challenger_moved(done)
