"""The fault matrix's harness: every test marked `fault_row(...)` is one row of docs/reliability.md.

What it does, so the four groups of rows (store, disk, process, serving) share one matrix:
- checks each row's marker at collection (the nine keyword arguments, all strings; `id` is
  lowercase-with-dashes and unique, since it becomes the anchor `docs/reliability.md#<id>` that
  alert rules' runbook_url point to) and stops the session naming the test if one is wrong;
- records each row's outcome and seconds (setup + call + teardown: a row's servers are part of
  what it costs), prints the matrix at the end of the session and writes it as JSON to
  `FMOPS_TEST_FAULTS_REPORT` (default /tmp/fmops-fault-matrix.json), which
  scripts/gen_reliability_doc.py renders into docs/reliability.md;
- turns a skipped row into a failure when `CI` or `FMOPS_TEST_FAULTS_STRICT` is set: a row that
  did not run proves nothing, and a skip in CI would hide a missing tool or a refused mount.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROW_FIELDS = ("id", "where", "fault", "sees", "kept", "recover", "bound", "retry", "runbook")
ROW_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
DEFAULT_REPORT = "/tmp/fmops-fault-matrix.json"


def strict() -> bool:
    """CI (or `make test-faults`) treats a skipped row as a failure."""
    return bool(os.environ.get("CI") or os.environ.get("FMOPS_TEST_FAULTS_STRICT"))


def report_path() -> Path:
    return Path(os.environ.get("FMOPS_TEST_FAULTS_REPORT") or DEFAULT_REPORT)


@dataclass
class Row:
    """One row of the matrix: what the marker promises and what this run saw."""

    id: str
    where: str
    fault: str
    sees: str
    kept: str
    recover: str
    bound: str
    retry: str
    runbook: str
    test: str
    group: str
    outcome: str = "not run"
    seconds: float = 0.0
    message: str = ""
    phases: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)  # setup, call, teardown


_ROWS: dict[str, Row] = {}  # nodeid -> row, in collection order
_STARTED = time.monotonic()


def _row_marker(item: pytest.Item) -> pytest.Mark | None:
    return item.get_closest_marker("fault_row")


def _check_marker(item: pytest.Item, mark: pytest.Mark, seen: dict[str, str]) -> dict[str, str]:
    """The marker's nine strings, or a UsageError naming the test and what is wrong."""
    where = f"{item.nodeid}: @pytest.mark.fault_row"
    if mark.args:
        raise pytest.UsageError(f"{where} takes keyword arguments only ({', '.join(ROW_FIELDS)})")
    unknown = sorted(set(mark.kwargs) - set(ROW_FIELDS))
    missing = [name for name in ROW_FIELDS if name not in mark.kwargs]
    if unknown or missing:
        raise pytest.UsageError(
            f"{where}: unknown {unknown or 'none'}, missing {missing or 'none'}; "
            f"the nine are {', '.join(ROW_FIELDS)}"
        )
    not_text = [name for name in ROW_FIELDS if not isinstance(mark.kwargs[name], str)]
    empty = [
        name
        for name in ROW_FIELDS
        if isinstance(mark.kwargs[name], str) and not mark.kwargs[name].strip()
    ]
    if not_text or empty:
        raise pytest.UsageError(
            f"{where}: not a string {not_text or 'none'}, empty {empty or 'none'}"
        )
    row_id = mark.kwargs["id"]
    if not ROW_ID.match(row_id):
        raise pytest.UsageError(f"{where}: id {row_id!r} is not lowercase-with-dashes")
    if row_id in seen and seen[row_id] != item.nodeid:
        raise pytest.UsageError(f"{where}: id {row_id!r} is also the row of {seen[row_id]}")
    seen[row_id] = item.nodeid
    return {name: mark.kwargs[name] for name in ROW_FIELDS}


def _group(item: pytest.Item) -> str:
    """test_store_faults.py -> store: the four groups of the matrix."""
    stem = Path(str(item.fspath)).stem
    return stem.removeprefix("test_").removesuffix("_faults")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs after `-m` deselection (trylast), so the matrix holds only the rows that will run."""
    seen: dict[str, str] = {}
    for item in items:
        mark = _row_marker(item)
        if mark is None:
            continue
        fields = _check_marker(item, mark, seen)
        _ROWS[item.nodeid] = Row(**fields, test=item.nodeid, group=_group(item))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    row = _ROWS.get(item.nodeid)
    if row is None:
        return
    skipped_as_failure = report.skipped and strict() and not hasattr(report, "wasxfail")
    if skipped_as_failure:
        report.outcome = "failed"
        report.longrepr = (
            f"fault row {row.id!r} was skipped ({_skip_reason(report)}); CI and "
            "FMOPS_TEST_FAULTS_STRICT treat a skipped row as a failure: it proves nothing"
        )
    row.seconds += report.duration
    row.durations[report.when] = round(report.duration, 1)
    row.phases[report.when] = report.outcome
    if skipped_as_failure:
        row.outcome = "failed (skipped)"
        row.message = str(report.longrepr)[:300]
    elif report.failed:
        row.outcome = "failed" if report.when == "call" else f"error ({report.when})"
        row.message = _short(report)
    elif report.skipped and row.outcome == "not run":
        row.outcome = "skipped"
        row.message = _skip_reason(report)
    elif report.when == "call" and report.passed and row.outcome == "not run":
        row.outcome = "passed"


def _skip_reason(report: pytest.TestReport) -> str:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return str(reason).removeprefix("Skipped: ")


def _short(report: pytest.TestReport) -> str:
    """The failure's last meaningful line, for the printed matrix and the JSON."""
    text = str(report.longreprtext or report.longrepr or "").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[0] if errors else (lines[-1] if lines else ""))[:300]


def matrix_json() -> dict[str, Any]:
    rows = list(_ROWS.values())
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "strict": strict(),
        "session_seconds": round(time.monotonic() - _STARTED, 1),
        "counts": {
            outcome: sum(1 for row in rows if row.outcome == outcome)
            for outcome in sorted({row.outcome for row in rows})
        },
        "rows": [{**asdict(row), "seconds": round(row.seconds, 1)} for row in rows],
    }


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The matrix as this run saw it, and its JSON for docs/reliability.md."""
    if not _ROWS:
        return
    data = matrix_json()
    width = max(len(row["id"]) for row in data["rows"])
    terminalreporter.section("fault matrix (docs/reliability.md)")
    for row in data["rows"]:
        terminalreporter.write_line(
            f"{row['id']:<{width}}  {row['outcome']:<8} {row['seconds']:>6.1f} s  "
            f"{row['where']}: {row['fault']}"
        )
        if row["outcome"] != "passed" and row["message"]:
            terminalreporter.write_line(f"{'':<{width}}    {row['message']}")
    path = report_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        terminalreporter.write_line(
            f"{len(data['rows'])} rows, {data['counts']}, {data['session_seconds']} s; "
            f"JSON: {path} (python scripts/gen_reliability_doc.py {path})"
        )
    except OSError as error:
        terminalreporter.write_line(f"could not write the matrix JSON to {path}: {error}")


# -- shared fixtures: the team's stores with a fault proxy in front of each ---------------------

EXPERIMENT = "financemath-faults"  # created on the server: its artefacts go to S3


@dataclass
class FaultStack:
    """The team's stores, running on 127.0.0.1, each reachable through a fault proxy:

    client -> ``tracking`` proxy -> `mlflow server` (PostgreSQL backend, proxied artefacts)
    -> ``s3`` proxy -> moto's S3 API. ``tracking_uri`` is the proxied address the stages are
    given; ``direct_uri`` the server itself (for the test's own checks, never faulted).
    """

    tracking_uri: str
    direct_uri: str
    tracking: Any  # FaultProxy in front of `mlflow server`
    s3_proxy: Any  # FaultProxy in front of moto (the server's MLFLOW_S3_ENDPOINT_URL)
    s3: Any  # team_stores.S3, a boto3 client straight to moto
    postgres: Any  # team_stores.Postgres
    workdir: Path
    server_log: Path

    def stop_postgres(self) -> None:
        """`pg_ctl stop -m fast`: sessions are cut, the server is gone (as a restart begins)."""
        _pg_ctl(self.postgres, "stop", "-m", "fast")

    def start_postgres(self) -> None:
        _pg_ctl(self.postgres, "start")

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.direct_uri, registry_uri=self.direct_uri)


def _pg_ctl(postgres: Any, action: str, *extra: str) -> None:
    """pg_ctl on the throwaway cluster of tests/integration/team_stores.py, its start options."""
    import subprocess

    from tests.integration.team_stores import _as_postgres, postgres_bin

    folder = postgres.folder
    command = [str(postgres_bin("pg_ctl")), "-D", str(folder / "data"), "-w", "-t", "60"]
    if action == "start":
        options = (
            f"-p {postgres.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=60"
        )
        command += ["-l", str(folder / "postgres.log"), "-o", options]
    done = subprocess.run(
        _as_postgres([*command, action, *extra]),
        capture_output=True, text=True, timeout=90, cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, f"pg_ctl {action} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One PostgreSQL, one moto, one `mlflow server` and two fault proxies for the session
    (the store and serving modules share it: each start costs half a minute on 2 busy cores).

    Tests switch the proxies back to ``pass`` (and start PostgreSQL) when they are done; the
    fixture checks at each test's end that the stack answers again (see ``healthy_stack``).
    Rows keep out of each other's way by name: the store rows use the experiment ``EXPERIMENT``
    and the model training registers; the serving row its own experiment and model.
    """
    import httpx

    from tests.faults.fault_proxy import FaultProxy
    from tests.helpers import VENV_BIN
    from tests.integration.team_stores import (
        S3,
        create_experiment,
        mlflow_server,
        moto_s3,
        throwaway_postgres,
    )

    workdir = tmp_path_factory.mktemp("fault-stack")
    with throwaway_postgres() as postgres:
        postgres.create_database("mlflow")
        with moto_s3(workdir) as s3:
            moto_port = int(s3.endpoint.rsplit(":", 1)[1])
            with FaultProxy(moto_port) as s3_proxy:
                proxied_s3 = S3(s3_proxy.url, s3.client)  # the server writes through the proxy
                with mlflow_server(
                    VENV_BIN / "mlflow", postgres, "mlflow", proxied_s3, workdir
                ) as direct:
                    # Created on the server's side, as the team does: artefacts proxied to S3
                    # (a stage creating it would store them under its own mlruns/ folder).
                    create_experiment(direct, EXPERIMENT)
                    port = int(direct.rsplit(":", 1)[1])
                    with FaultProxy(port) as tracking:
                        assert httpx.get(f"{tracking.url}/health", timeout=10).status_code == 200
                        yield FaultStack(
                            tracking_uri=tracking.url,
                            direct_uri=direct,
                            tracking=tracking,
                            s3_proxy=s3_proxy,
                            s3=s3,
                            postgres=postgres,
                            workdir=workdir,
                            server_log=workdir / "mlflow.log",
                        )


@pytest.fixture()
def healthy_stack(fault_stack: FaultStack) -> Any:
    """The module's stack, put back to health after the test (proxies pass, PostgreSQL up)."""
    import httpx

    yield fault_stack
    fault_stack.tracking.set_mode("pass")
    fault_stack.s3_proxy.set_mode("pass")
    fault_stack.tracking.clear_triggers()
    fault_stack.s3_proxy.clear_triggers()
    try:
        import psycopg

        psycopg.connect(fault_stack.postgres.uri("postgres"), connect_timeout=3).close()
    except Exception:
        fault_stack.start_postgres()
    deadline = time.monotonic() + 90  # a restarted PostgreSQL under load: bounded, generous
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{fault_stack.direct_uri}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


@pytest.fixture(scope="module")
def features_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small feature table built by the real stages (sample source, 150 rows, int8 embedding),
    so training runs against the faulted stores start from its own folder (cwd) in seconds."""
    from financemath_mlops.features.build import build_features
    from financemath_mlops.ingestion import ingest
    from tests.conftest import pipeline_settings

    workdir = tmp_path_factory.mktemp("fault-features")
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("FMOPS_", "MLFLOW_"))}
    try:
        # int8: the 23 MB embedding bundle, not fp32's 90 MB, is what every training uploads
        settings = pipeline_settings(
            workdir, rows=150, features={"embedding": {"precision": "int8"}}
        )
        ingest(settings.ingestion, settings.ingestion_output, settings.paths.hf_cache_dir)
        build_features(
            settings.features,
            settings.paths,
            settings.features_input,
            settings.features_output,
            show_progress=False,
        )
    finally:
        os.environ.update(saved)
    return workdir


def stage_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    """A user's environment for a stage run against ``tracking_uri`` (no S3 or database secrets:
    artefacts go through the tracking server), the shared embedding caches, 3 CV folds."""
    from tests.helpers import REPO_ROOT
    from tests.integration.team_stores import client_env

    return client_env(
        tracking_uri,
        FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
        FMOPS_PATHS__HF_CACHE_DIR=str(REPO_ROOT / ".cache" / "hf"),
        FMOPS_TRAINING__CV_FOLDS="3",
        FMOPS_MLFLOW__EXPERIMENT_NAME=EXPERIMENT,
        **extra,
    )
