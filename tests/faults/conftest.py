"""The fault matrix's harness: each test marked `fault_row("<id>")` runs one row of docs/reliability.md.

What it does, so the four groups of rows (store, disk, process, serving) share one matrix:
- looks each test's row up by id in tests/faults/matrix.py (where every row's fields live) at
  collection and stops the session naming the test and the id if the marker is not one id, the
  id is no row, or two tests name one row; checks the table itself (nine non-empty strings a row,
  `id` lowercase-with-dashes and unique, since it becomes the anchor `docs/reliability.md#<id>`
  that alert rules' runbook_url point to), and, when every fault module was collected whole,
  that each row has its test;
- records each row's outcome and seconds (setup + call + teardown: a row's servers are part of
  what it costs), prints the matrix at the end of the session and writes it as JSON to
  `FMOPS_TEST_FAULTS_REPORT` (default /tmp/fmops-fault-matrix.json), which
  scripts/gen_reliability_doc.py renders into docs/reliability.md;
- turns a skipped row into a failure when `CI` or `FMOPS_TEST_FAULTS_STRICT` is set: a row that
  did not run proves nothing, and a skip in CI would hide a missing tool or a refused mount;
- gives slow, self-contained set-ups a head start (:class:`HeadStart`): the team stores, the
  Prefect server, the shared feature table and the SIGKILL sweep begin in background threads as
  soon as collection shows a selected row needs them, and run while the rows before them do
  (2 cores: the in-process rows leave one mostly idle). Each is built exactly as its fixture
  built it before; only when it starts changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from tests.faults.matrix import BY_ID, ROWS, FaultRow

ROW_FIELDS = tuple(f.name for f in fields(FaultRow))
ROW_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
DEFAULT_REPORT = "/tmp/fmops-fault-matrix.json"


def strict() -> bool:
    """CI (or `make test-faults`) treats a skipped row as a failure."""
    return bool(os.environ.get("CI") or os.environ.get("FMOPS_TEST_FAULTS_STRICT"))


def report_path() -> Path:
    return Path(os.environ.get("FMOPS_TEST_FAULTS_REPORT") or DEFAULT_REPORT)


@dataclass
class Row(FaultRow):
    """One row of the matrix: what tests/faults/matrix.py promises and what this run saw."""

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


def check_table(rows: tuple[FaultRow, ...] = ROWS) -> None:
    """Each row of tests/faults/matrix.py: nine non-empty strings, a lowercase-with-dashes id
    that no other row has; a UsageError naming the row otherwise."""
    ids: set[str] = set()
    for row in rows:
        where = f"tests/faults/matrix.py: row {row.id!r}"
        values = asdict(row)
        not_text = [name for name in ROW_FIELDS if not isinstance(values[name], str)]
        empty = [name for name in ROW_FIELDS if name not in not_text and not values[name].strip()]
        if not_text or empty:
            raise pytest.UsageError(
                f"{where}: not a string {not_text or 'none'}, empty {empty or 'none'}"
            )
        if not ROW_ID.match(row.id):
            raise pytest.UsageError(f"{where}: the id is not lowercase-with-dashes")
        if row.id in ids:
            raise pytest.UsageError(f"{where}: two rows have this id")
        ids.add(row.id)


def row_of(nodeid: str, mark: pytest.Mark, seen: dict[str, str]) -> FaultRow:
    """The row the test's marker names, or a UsageError naming the test and what is wrong."""
    where = f"{nodeid}: @pytest.mark.fault_row"
    if mark.kwargs or len(mark.args) != 1 or not isinstance(mark.args[0], str):
        raise pytest.UsageError(
            f"{where} takes the row's id only, fault_row(\"<id>\"); the row's fields live in "
            "tests/faults/matrix.py"
        )
    row_id = mark.args[0]
    if row_id not in BY_ID:
        raise pytest.UsageError(f"{where}: no row {row_id!r} in tests/faults/matrix.py")
    if row_id in seen and seen[row_id] != nodeid:
        raise pytest.UsageError(f"{where}: row {row_id!r} is also the row of {seen[row_id]}")
    seen[row_id] = nodeid
    return BY_ID[row_id]


def rows_without_a_test(seen: dict[str, str]) -> list[str]:
    """The ids of tests/faults/matrix.py that no collected test names, in the table's order."""
    return [row.id for row in ROWS if row.id not in seen]


def _whole_matrix_collected(config: pytest.Config, items: list[pytest.Item]) -> bool:
    """Every tests/faults/test_*.py collected, none cut down to some tests by `file::test`."""
    modules = {Path(str(item.fspath)) for item in items}
    every = set(Path(__file__).parent.glob("test_*.py"))
    return every <= modules and not any("::" in str(arg) for arg in config.args)


def _group(item: pytest.Item) -> str:
    """test_store_faults.py -> store: the four groups of the matrix."""
    stem = Path(str(item.fspath)).stem
    return stem.removeprefix("test_").removesuffix("_faults")


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """Before the other hooks (`-m`/`-k` deselection among them) every collected test's row is
    looked up, so a wrong marker fails any run that collects it, and a row without a test fails
    a run that collected the whole matrix (`make test-faults`; `make test`, collecting tests/).
    After them, the matrix takes only the rows that will run, and their head starts begin."""
    check_table()
    seen: dict[str, str] = {}
    marked = {
        item.nodeid: row_of(item.nodeid, mark, seen)
        for item in items
        if (mark := _row_marker(item)) is not None
    }
    missing = rows_without_a_test(seen)
    if missing and _whole_matrix_collected(config, items):
        raise pytest.UsageError(
            f"tests/faults/matrix.py: no test marks itself with rows {missing} "
            '(@pytest.mark.fault_row("<id>") on the test that runs the row)'
        )
    yield
    for item in items:
        if (row := marked.get(item.nodeid)) is not None:
            _ROWS[item.nodeid] = Row(**asdict(row), test=item.nodeid, group=_group(item))
    # Only the matrix's own tests: a test elsewhere may use a fixture of the same name (the root
    # conftest's `trained_model`), and `make test` must not train the matrix's spare model.
    here = Path(__file__).parent
    ours = [item for item in items if here in item.path.parents]
    wanted = {name for item in ours for name in getattr(item, "fixturenames", ())}
    starts = [head for name, head in HEAD_STARTS.items() if name in wanted]
    if starts:
        import mlflow.tracking  # noqa: F401  (imported once here, not raced by two threads)
    for head in starts:
        head.begin()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop what a head start began and no fixture stopped (a session cut short)."""
    for head in reversed(list(HEAD_STARTS.values())):
        head.close()


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
        # set-ups built in the background (HeadStart), each ready this long after it began
        # (waiting for those it builds on included): a row's set-up seconds count only its wait
        "head_starts": {
            name: round(head.seconds, 1)
            for name, head in HEAD_STARTS.items()
            if head.seconds is not None
        },
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
    if data["head_starts"]:
        terminalreporter.write_line(
            "begun in the background at collection (head starts): "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in data["head_starts"].items())
        )
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


# -- head starts: slow set-ups begun in the background -------------------------------------------


class HeadStart:
    """A slow set-up that needs nothing from the rows before it (servers to start, a table to
    build, the SIGKILL sweep's training runs), run in a thread from the end of collection.

    ``build(stack, workdir)`` enters whatever it starts into ``stack`` (an ExitStack closed by
    :meth:`close`, from the fixture's teardown or at the session's end) and returns what the
    fixture hands the rows. The fixture calls :meth:`result`, which begins it if collection did
    not (a row run alone) and waits for it; an error in the thread is raised there, in the row's
    set-up, as if the fixture had built it in line.
    """

    def __init__(self, name: str, build: Callable[[contextlib.ExitStack, Path], Any]) -> None:
        self.name, self.build = name, build
        self.seconds: float | None = None  # how long the build took, in the background
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stack = contextlib.ExitStack()
        self._value: Any = None
        self._error: BaseException | None = None

    def begin(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"head-start-{self.name}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            workdir = Path(tempfile.mkdtemp(prefix=f"fmops-faults-{self.name}-"))
            self._stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            self._value = self.build(self._stack, workdir)
        except BaseException as error:  # raised again in the fixture that waits for it
            self._error = error
        finally:
            self.seconds = time.monotonic() - started

    def result(self, timeout: float = 900) -> Any:
        self.begin()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.name}: not ready after {timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self._value

    def close(self) -> None:
        """Stop what the build started (servers by pid, folders removed); idempotent."""
        if self._thread is None:
            return
        self._thread.join(900)
        self._stack.close()

    def held(self) -> Iterator[Any]:
        """A fixture's body (``yield from HEAD_STARTS[name].held()``): the value, waited for,
        for the fixture's scope; what the build started is stopped when the scope ends."""
        try:
            yield self.result()
        finally:
            self.close()


HEAD_STARTS: dict[str, HeadStart] = {}  # fixture name -> its head start


def head_start(fixture: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``build`` as the head start of the fixture named ``fixture`` (the fixture calls
    ``HEAD_STARTS[fixture].result()``)."""

    def register(build: Callable[..., Any]) -> Callable[..., Any]:
        HEAD_STARTS[fixture] = HeadStart(fixture, build)
        return build

    return register


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


@head_start("fault_stack")
def start_fault_stack(stack: contextlib.ExitStack, workdir: Path) -> FaultStack:
    """One PostgreSQL, one moto, one `mlflow server` and two fault proxies for the session
    (the store and serving modules share it: each start costs half a minute on 2 busy cores)."""
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

    postgres = stack.enter_context(throwaway_postgres())
    postgres.create_database("mlflow")
    s3 = stack.enter_context(moto_s3(workdir))
    moto_port = int(s3.endpoint.rsplit(":", 1)[1])
    s3_proxy = stack.enter_context(FaultProxy(moto_port))
    proxied_s3 = S3(s3_proxy.url, s3.client)  # the server writes through the proxy
    direct = stack.enter_context(
        mlflow_server(VENV_BIN / "mlflow", postgres, "mlflow", proxied_s3, workdir)
    )
    # Created on the server's side, as the team does: artefacts proxied to S3 (a stage creating
    # it would store them under its own mlruns/ folder).
    create_experiment(direct, EXPERIMENT)
    port = int(direct.rsplit(":", 1)[1])
    tracking = stack.enter_context(FaultProxy(port))
    assert httpx.get(f"{tracking.url}/health", timeout=10).status_code == 200
    return FaultStack(
        tracking_uri=tracking.url,
        direct_uri=direct,
        tracking=tracking,
        s3_proxy=s3_proxy,
        s3=s3,
        postgres=postgres,
        workdir=workdir,
        server_log=workdir / "mlflow.log",
    )


@pytest.fixture(scope="session")
def fault_stack() -> Any:
    """The team's stores (:func:`start_fault_stack`, begun at collection), for the session.

    Tests switch the proxies back to ``pass`` (and start PostgreSQL) when they are done; the
    fixture checks at each test's end that the stack answers again (see ``healthy_stack``).
    Rows keep out of each other's way by name: the store rows use the experiment ``EXPERIMENT``
    and the model training registers; the serving row its own experiment and model.
    """
    yield from HEAD_STARTS["fault_stack"].held()


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


FEATURE_ROWS = 150  # sample rows of the shared feature table


@head_start("fault_features")
def build_fault_features(stack: contextlib.ExitStack, workdir: Path) -> Path:
    """A small feature table built by the real stages, as a user runs them (sample source, 150
    rows, int8 embedding: the 23 MB bundle, not fp32's 90 MB, is what every training uploads),
    laid out as a checkout's defaults (data/interim, data/processed under ``workdir``). Rows never
    write into it: each copies it (:func:`copy_fault_features`)."""
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT, cli_env

    env = cli_env(
        FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
        FMOPS_PATHS__HF_CACHE_DIR=str(REPO_ROOT / ".cache" / "hf"),
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    for command in (
        ["ingestion", "--source", "sample", "--rows", str(FEATURE_ROWS), "--seed", "11"],
        ["features", "--precision", "int8"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", f"financemath_mlops.{command[0]}", *command[1:],
             "--log-level", "WARNING"],
            env=env, cwd=workdir, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{command[0]} failed:\n{done.stderr[-3000:]}"
    return workdir


def copy_fault_features(target: Path) -> Path:
    """A folder of its own holding the shared feature table and its records (training writes
    its pointer beside the table), as the cwd of the trainings a row runs."""
    template = HEAD_STARTS["fault_features"].result()
    shutil.copytree(template / "data", target / "data")
    return target


@pytest.fixture(scope="module")
def features_workdir(fault_features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared feature table (:func:`build_fault_features`) in the module's own folder, so
    training runs against the faulted stores start from it (cwd) in seconds."""
    return copy_fault_features(tmp_path_factory.mktemp("fault-features"))


@pytest.fixture(scope="session")
def fault_features() -> Path:
    """Only so that collection begins :func:`build_fault_features` for the rows that need it."""
    return HEAD_STARTS["fault_features"].result()


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


# -- the session's trained model, built by the stages' commands in the background -------------

TRAINED_NICE = 5  # before the sweep (nice 10): the Dask and serving rows wait for this one


@head_start("trained_model")
def build_trained_model(stack: contextlib.ExitStack, workdir: Path) -> dict[str, Any]:
    """tests/conftest.py's ``trained_model`` (ingest -> features -> train -> evaluate -> promote,
    300 sample rows, seed 11, 3 folds, a SQLite store under ``workdir``: the layout of
    :func:`tests.conftest.pipeline_settings`), made by the stages' own commands in subprocesses,
    so it can be built in the background while the first rows run (a thread must not touch this
    process's environment or MLflow's process-wide URIs, as the in-process stage functions do).
    Returns the trained pointer (model name, version, run id)."""
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT, cli_env

    env = cli_env(
        FMOPS_PATHS__RAW_DIR=str(workdir / "data" / "raw"),
        FMOPS_PATHS__INTERIM_DIR=str(workdir / "data" / "interim"),
        FMOPS_PATHS__PROCESSED_DIR=str(workdir / "data" / "processed"),
        FMOPS_PATHS__PREDICTIONS_DIR=str(workdir / "data" / "predictions"),
        FMOPS_PATHS__REPORTS_DIR=str(workdir / "reports"),
        FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
        FMOPS_PATHS__HF_CACHE_DIR=str(REPO_ROOT / ".cache" / "hf"),
        FMOPS_INGESTION__SOURCE="sample",
        FMOPS_INGESTION__ROWS="300",
        FMOPS_INGESTION__SEED="11",
        FMOPS_MLFLOW__TRACKING_URI=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
        FMOPS_MLFLOW__ARTIFACT_ROOT=str(workdir / "mlruns" / "artifacts"),
        FMOPS_TRAINING__CV_FOLDS="3",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    config = ["--config", str(REPO_ROOT / "configs" / "default.yaml"), "--log-level", "WARNING"]
    for stage in ("ingestion", "features", "training", "evaluation", "promotion"):
        done = subprocess.run(
            ["nice", "-n", str(TRAINED_NICE), sys.executable, "-m", f"financemath_mlops.{stage}",
             *config],
            env=env, cwd=workdir, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{stage} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    (pointer,) = (workdir / "data" / "processed").glob("*.trained.json")
    tracking_uri = env["FMOPS_MLFLOW__TRACKING_URI"]
    return {
        **json.loads(pointer.read_text(encoding="utf-8")),
        "workdir": workdir,
        "tracking_uri": tracking_uri,
        "env": cli_env(
            FMOPS_MLFLOW__TRACKING_URI=tracking_uri,
            FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
            MLFLOW_DISABLE_TELEMETRY="true",
        ),
    }


@pytest.fixture(scope="session")
def trained_model() -> Any:
    """The fault rows' ``trained_model`` (overrides tests/conftest.py's: the same model, built
    in the background from the end of collection by :func:`build_trained_model`)."""
    from tests.conftest import TrainedModel, pipeline_settings

    head = HEAD_STARTS["trained_model"]
    try:
        built = head.result()
        workdir = built["workdir"]
        saved = {
            k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("FMOPS_", "MLFLOW_"))
        }
        try:
            settings = pipeline_settings(workdir)
        finally:
            os.environ.update(saved)
        assert settings.mlflow.tracking_uri == built["tracking_uri"], (settings.mlflow, built)
        yield TrainedModel(
            tracking_uri=built["tracking_uri"],
            workdir=workdir,
            model_name=built["model_name"],
            version=str(built["version"]),
            run_id=built["run_id"],
            features_path=settings.features_output,
            ingested_path=settings.ingestion_output,
            settings=settings,
            env=dict(built["env"]),
            metrics_path=settings.metrics_output,
        )
    finally:
        head.close()
