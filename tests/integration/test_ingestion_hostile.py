"""Hostile input corpus for ingestion: every bad row is a reject with its reason, every bad file
one clear error with exit 2, and output + rejects + manifest always change together."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from financemath_mlops.atomic import set_store, write_json
from financemath_mlops.cli import run_main
from financemath_mlops.ingestion.__main__ import main as ingestion_main
from financemath_mlops.ingestion.sources import SourceError, read_local_batches
from financemath_mlops.ingestion.validate import RowValidator, validate_rows
from tests.helpers import cli_env, make_rows

GOOD = make_rows(3)
BOM = b"\xef\xbb\xbf"


def jsonl(*rows: Any) -> bytes:
    return b"".join(
        row if isinstance(row, bytes) else json.dumps(row).encode() + b"\n" for row in rows
    )


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# name -> (file name, bytes, expected reject reason fragment); the 3 GOOD rows are always kept.
ROW_CASES = {
    "lone surrogate in a JSONL question": (
        "in.jsonl",
        jsonl(*GOOD, b'{"question_id": "s", "question": "x\\ud800", "topic": "Accounting"}\n'),
        "lone surrogate",
    ),
    "lone surrogate in a key of a JSON array row": (
        "in.json",
        b"["
        + b",".join(json.dumps(r).encode() for r in GOOD)
        + b', {"question_id": "k", "question": "q", "topic": "A", "\\udc00": 1}]',
        "lone surrogate",
    ),
    "JSONL line nested past the parser's limit": (
        "in.jsonl",
        jsonl(*GOOD, (deep(100_000) + "\n").encode()),
        "nested deeper than",
    ),
    "tables nested 200 levels (parsable, still too deep)": (
        "in.jsonl",
        jsonl(
            *GOOD,
            b'{"question_id": "d", "question": "q", "topic": "A", "tables": '
            + deep(200).encode()
            + b"}\n",
        ),
        "nested deeper than 64",
    ),
    "JSONL line that is not UTF-8": (
        "in.jsonl",
        jsonl(*GOOD, b'{"question_id": "u", "question": "caf\xe9", "topic": "A"}\n'),
        "not valid UTF-8",
    ),
    "JSONL line that is not JSON": ("in.jsonl", jsonl(*GOOD, b"{oops\n"), "not valid JSON"),
    "number where text belongs": (
        "in.jsonl",
        jsonl(*GOOD, {"question_id": 7, "question": "q", "topic": "A"}),
        "question_id",
    ),
}

FILE_CASES = {
    "empty JSONL": ("in.jsonl", b"", "holds no rows"),
    "blank-lines-only JSONL": ("in.jsonl", b"\n  \n\n", "holds no rows"),
    "BOM-only JSONL": ("in.jsonl", BOM + b"\n", "holds no rows"),
    "empty JSON array": ("in.json", b"[]", "holds no rows"),
    "JSON array that is not UTF-8": ("in.json", b'[{"question": "caf\xe9"}]', "not valid UTF-8"),
    "JSON array nested past the parser's limit": (
        "in.json",
        deep(100_000).encode(),
        "nested too deeply",
    ),
    "JSON object, not an array": ("in.json", b'{"question_id": "x"}', "expected a JSON array"),
    "JSONL with no readable line": ("in.jsonl", b"{bad\n{worse\n", "no readable JSON row"),
    "text file named .parquet": ("in.parquet", b"not parquet", "not a readable Parquet"),
    "unsupported extension": ("in.csv", b"a,b\n", "unsupported file type"),
}


def ingest_cli(path: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = run_main(ingestion_main, ["--source", "local", "--path", str(path)])
    return code, capsys.readouterr().err


def output_set(workdir: Path) -> dict[str, bytes]:
    interim = workdir / "data" / "interim"
    names = ("financemath.jsonl", "financemath.rejects.jsonl", "financemath.manifest.json")
    return {name: (interim / name).read_bytes() for name in names}


def assert_consistent(workdir: Path) -> dict[str, Any]:
    """The manifest describes exactly the output and rejects beside it."""
    files = output_set(workdir)
    manifest = json.loads(files["financemath.manifest.json"])
    for name in ("financemath.jsonl", "financemath.rejects.jsonl"):
        facts = manifest["files"][name]
        assert hashlib.sha256(files[name]).hexdigest() == facts["sha256"], name
        assert files[name].count(b"\n") == facts["rows"], name
    counts = manifest["counts"]
    assert counts["read"] == counts["written"] + counts["rejected"]
    return manifest


@pytest.fixture
def previous_set(isolated_env: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, bytes]:
    """A complete earlier run (3 rows) that failures must leave exactly as it is."""
    source = isolated_env / "earlier.jsonl"
    source.write_bytes(jsonl(*GOOD))
    code, err = ingest_cli(source, isolated_env, capsys)
    assert code == 0, err
    return output_set(isolated_env)


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_bad_row_becomes_a_reject_with_its_reason(
    case: str, isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, payload, reason = ROW_CASES[case]
    path = isolated_env / name
    path.write_bytes(payload)
    code, err = ingest_cli(path, isolated_env, capsys)
    assert code == 0, err
    manifest = assert_consistent(isolated_env)
    assert manifest["counts"] == {"read": 4, "written": 3, "rejected": 1, "labelled": 3}
    rejects = output_set(isolated_env)["financemath.rejects.jsonl"].decode("utf-8")
    assert reason in json.loads(rejects)["reason"]


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_file_is_one_clear_error_and_keeps_the_previous_outputs(
    case: str,
    previous_set: dict[str, bytes],
    isolated_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, payload, message = FILE_CASES[case]
    path = isolated_env / name
    path.write_bytes(payload)
    code, err = ingest_cli(path, isolated_env, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert output_set(isolated_env) == previous_set


def test_bom_does_not_cost_the_first_row(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, payload in (
        ("in.jsonl", BOM + jsonl(*GOOD)),
        ("in.json", BOM + json.dumps(GOOD).encode()),
    ):
        path = isolated_env / name
        path.write_bytes(payload)
        code, err = ingest_cli(path, isolated_env, capsys)
        assert code == 0, err
        counts = assert_consistent(isolated_env)["counts"]
        assert counts == {"read": 3, "written": 3, "rejected": 0, "labelled": 3}


def test_failure_mid_write_keeps_the_previous_set(
    previous_set: dict[str, bytes],
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import financemath_mlops.ingestion.stage as run

    def crash_on_rejects(handle: Any, rejects: Any) -> int:
        # The output is complete; the rejects are half written when the disk fills up.
        handle.write(next(r.to_json() for r in rejects)["reason"])
        raise OSError("disk full")

    monkeypatch.setattr(run, "write_rejects", crash_on_rejects)
    source = isolated_env / "bigger.jsonl"
    source.write_bytes(jsonl(*make_rows(8), {"question_id": 1}))
    with pytest.raises(OSError, match="disk full"):
        ingest_cli(source, isolated_env, capsys)
    assert output_set(isolated_env) == previous_set
    assert [
        p.name
        for p in set_store(isolated_env / "data/interim/financemath.jsonl").iterdir()
        if p.name.startswith("g-")
    ].__len__() == 1


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import financemath_mlops.ingestion.stage as run
    from financemath_mlops.cli import run_main
    from financemath_mlops.ingestion.__main__ import main
    def write_then_die(handle, rejects):  # output written, rejects half written
        handle.write('{"half": ')
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    run.write_rejects = write_then_die
    sys.exit(run_main(main, sys.argv[1:]))
    """
)


def test_kill_9_mid_write_keeps_the_previous_set_and_the_next_run_cleans_up(
    previous_set: dict[str, bytes], isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = isolated_env / "bigger.jsonl"
    source.write_bytes(jsonl(*make_rows(8), {"question_id": 1}))
    done = subprocess.run(
        [sys.executable, "-c", KILLER, "--source", "local", "--path", str(source)],
        cwd=isolated_env,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert output_set(isolated_env) == previous_set
    store = set_store(isolated_env / "data/interim/financemath.jsonl")
    assert len([p for p in store.iterdir() if p.name.startswith("g-")]) == 2  # old + unfinished

    code, err = ingest_cli(source, isolated_env, capsys)
    assert code == 0, err
    counts = assert_consistent(isolated_env)["counts"]
    assert counts == {"read": 9, "written": 8, "rejected": 1, "labelled": 8}
    assert len([p for p in store.iterdir() if p.name.startswith("g-")]) == 1
    assert not list((isolated_env / "data/interim").glob(".*.tmp"))


def test_outputs_written_before_the_set_layout_stay_until_replaced(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    interim = isolated_env / "data" / "interim"
    interim.mkdir(parents=True)
    (interim / "financemath.jsonl").write_text("old\n")
    (interim / "financemath.rejects.jsonl").write_text("")
    source = isolated_env / "in.jsonl"
    source.write_bytes(b"")
    code, _ = ingest_cli(source, isolated_env, capsys)
    assert code == 2
    assert (interim / "financemath.jsonl").read_text() == "old\n"
    source.write_bytes(jsonl(*GOOD))
    assert ingest_cli(source, isolated_env, capsys)[0] == 0
    assert_consistent(isolated_env)


def test_outputs_get_the_umask_permissions_not_0600(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = os.umask(0o022)
    try:
        write_json(isolated_env / "out" / "x.json", {"a": 1})
        source = isolated_env / "in.jsonl"
        source.write_bytes(jsonl(*GOOD))
        assert ingest_cli(source, isolated_env, capsys)[0] == 0
    finally:
        os.umask(old)
    assert (isolated_env / "out" / "x.json").stat().st_mode & 0o777 == 0o644
    for data in output_set(isolated_env):
        assert (isolated_env / "data" / "interim" / data).stat().st_mode & 0o777 == 0o644


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(isolated_env: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    dead_pid = int(finished.stdout)
    target = isolated_env / "x.json"
    stale = isolated_env / f".x.json.{dead_pid}.0badc0de.tmp"
    stale.write_text("half")
    mine = isolated_env / f".x.json.{os.getpid()}.12345678.tmp"  # a live writer's: kept
    mine.write_text("busy")
    write_json(target, [1])
    assert not stale.exists() and mine.exists()


def test_streaming_reader_and_validator_have_the_same_fixes(tmp_path: Path) -> None:
    """Batch prediction reads through read_local_batches and validates batch by batch."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        BOM
        + jsonl(
            *GOOD,
            b'{"question_id": "s", "question": "x\\ud800", "topic": "A"}\n',
            (deep(100_000) + "\n").encode(),
            b'{"question_id": "u", "question": "caf\xe9", "topic": "A"}\n',
        )
    )
    validator = RowValidator({"source": "predict", "dataset_id": str(path)})
    results = [validator.validate(batch) for batch in read_local_batches(path, 2)]
    records = [record for result in results for record in result.records]
    rejects = [reject for result in results for reject in result.rejects]
    assert [r.question_id for r in records] == ["t-0", "t-1", "t-2"]
    reasons = [r.reason for r in rejects]
    assert "lone surrogate" in reasons[0]
    assert "nested deeper" in reasons[1] and "not valid UTF-8" in reasons[2]
    for reject in rejects:
        json.dumps(reject.to_json(), ensure_ascii=False).encode("utf-8")
    path.write_bytes(b"\n")
    with pytest.raises(SourceError, match="holds no rows"):
        list(read_local_batches(path, 2))


@pytest.mark.parametrize("batch_rows", [1, 2, 3])
def test_validating_in_batches_equals_validating_the_whole_input(batch_rows: int) -> None:
    rows: list[Any] = [*make_rows(4), {**GOOD[1], "question": "again?"}, "text", GOOD[0]]
    meta = {"source": "test"}
    whole = validate_rows(rows, meta, ingested_at="2026-01-01T00:00:00+00:00")
    validator = RowValidator(meta, ingested_at="2026-01-01T00:00:00+00:00")
    parts = [validator.validate(rows[i : i + batch_rows]) for i in range(0, len(rows), batch_rows)]
    assert [r for p in parts for r in p.records] == whole.records
    assert [r.to_json() for p in parts for r in p.rejects] == [r.to_json() for r in whole.rejects]
    assert [(r.row, r.reason) for r in whole.rejects] == [
        (4, "duplicate question_id (first seen at row 1)"),
        (5, "row is a str, not an object"),
        (6, "duplicate question_id (first seen at row 0)"),
    ]
