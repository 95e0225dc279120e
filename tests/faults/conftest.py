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
