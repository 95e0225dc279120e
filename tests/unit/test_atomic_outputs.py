"""Outputs are the old complete set or the new complete set, and a full disk says so in one line.

Fast and without a mount: a writer that fails inside the block (the same path a full disk takes),
/dev/full for a real ENOSPC, and the command-line exit. The real full disks under each stage's
outputs are the fault matrix's rows (tests/faults/test_disk_faults.py, `make test-faults`).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
from pathlib import Path

import pytest

from financemath_mlops.atomic import (
    append_line,
    atomic_path,
    atomic_set,
    is_out_of_space,
    published_folder,
    write_json,
)
from financemath_mlops.cli import run_main, setup_logging
from financemath_mlops.errors import OutOfSpaceError, StageError
from tests.helpers import REPO_ROOT


def full_disk(path: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([path] if path else []))


def entries(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: a file's bytes, a link's target, a folder's name."""
    out: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            out[rel] = os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


def test_a_full_disk_is_recognised_through_the_wrappers_libraries_put_around_it() -> None:
    pyarrow_like = OSError(
        "Error writing bytes to file. Detail: [errno 28] No space left on device"
    )
    try:
        try:
            raise OSError("sqlite3.OperationalError: database or disk is full")
        except OSError as inner:
            raise RuntimeError("MlflowException: cannot log") from inner
    except RuntimeError as wrapped:
        sqlite_like = wrapped
    assert is_out_of_space(full_disk())
    assert is_out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_out_of_space(pyarrow_like) and is_out_of_space(sqlite_like)
    assert not is_out_of_space(OSError(errno.EACCES, "Permission denied"))
    assert not is_out_of_space(ValueError("no space in this name"))


def test_a_file_whose_write_fails_keeps_the_previous_one_and_names_it(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"mae": 1.0})
    before = entries(tmp_path)
    with pytest.raises(OutOfSpaceError) as caught, atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise full_disk()
    message = str(caught.value)
    assert message.startswith(f"no space left on device writing {target} (")
    assert " free of " in message and "the previous metrics.json is unchanged" in message
    assert f"df -h {tmp_path}" in message and "rerun" in message
    assert caught.value.exit_code == 1
    assert entries(tmp_path) == before  # the same bytes, no temp file


def test_a_file_set_whose_write_fails_keeps_the_previous_set(tmp_path: Path) -> None:
    files = [tmp_path / "records.jsonl", tmp_path / "records.manifest.json"]
    with atomic_set(files) as paths:
        for path in files:
            paths[path].write_text(f"old {path.name}\n", encoding="utf-8")
    before = entries(tmp_path)
    said = r"the previous set \(records.jsonl, records"
    with pytest.raises(OutOfSpaceError, match=said), atomic_set(files) as paths:
        paths[files[0]].write_text("new\n", encoding="utf-8")
        raise full_disk()
    assert entries(tmp_path) == before  # no unfinished generation left in the set's folder


def test_a_report_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "20261207T120000Z"
    said = "no partial 20261207T120000Z was left behind"
    with pytest.raises(OutOfSpaceError, match=said), published_folder(report) as staging:
        (staging / "drift.html").write_text("<html>", encoding="utf-8")
        raise full_disk()
    assert list((tmp_path / "reports").iterdir()) == []
    with published_folder(report) as staging:
        (staging / "drift.html").write_text("<html>", encoding="utf-8")
        (staging / "drift.json").write_text("{}", encoding="utf-8")
    assert sorted(p.name for p in report.iterdir()) == ["drift.html", "drift.json"]
    assert [p.name for p in report.parent.iterdir()] == [report.name]


def test_a_named_report_folder_keeps_its_files_until_every_new_one_is_written(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "drift.html").write_text("old", encoding="utf-8")
    (folder / "notes.txt").write_text("the user's", encoding="utf-8")
    said = "the files already in mine are unchanged"
    with pytest.raises(OutOfSpaceError, match=said), published_folder(folder) as staging:
        (staging / "drift.html").write_text("new", encoding="utf-8")
        raise full_disk()
    assert entries(tmp_path) == {
        "mine": "dir",
        "mine/drift.html": b"old",
        "mine/notes.txt": b"the user's",
    }
    with published_folder(folder) as staging:
        (staging / "drift.html").write_text("new", encoding="utf-8")
    assert (folder / "drift.html").read_text() == "new" and (folder / "notes.txt").exists()


def test_a_staging_folder_left_by_a_killed_writer_goes_with_the_next_report(
    tmp_path: Path,
) -> None:
    dead = 2**22 + 12345  # above pid_max's default: no process has it
    stale = tmp_path / f".20261207T000000Z.{dead}.0123abcd.tmp"
    stale.mkdir()
    (stale / "drift.html").write_text("half", encoding="utf-8")
    with published_folder(tmp_path / "20261207T010000Z") as staging:
        (staging / "drift.json").write_text("{}", encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261207T010000Z"]


def test_an_index_line_on_a_full_device_raises_and_names_it() -> None:
    """/dev/full: every write fails with ENOSPC, for real."""
    with pytest.raises(OutOfSpaceError, match="writing /dev/full .*no torn line"):
        append_line(Path("/dev/full"), json.dumps({"kind": "drift"}))


def test_index_lines_append_whole(tmp_path: Path) -> None:
    index = tmp_path / "index.jsonl"
    append_line(index, '{"a": 1}')
    append_line(index, '{"b": 2}\n')
    assert index.read_text() == '{"a": 1}\n{"b": 2}\n'


def test_the_model_card_its_plot_and_results_change_together(tmp_path: Path) -> None:
    from financemath_mlops.evaluation.card import publish_card

    report = json.loads((REPO_ROOT / "docs" / "model-card.json").read_text(encoding="utf-8"))
    card, plot, results = tmp_path / "card.md", tmp_path / "card-errors.png", tmp_path / "card.json"
    publish_card(report, card, plot, results)
    assert plot.read_bytes()[:4] == b"\x89PNG" and json.loads(results.read_text()) == report
    before = entries(tmp_path)
    broken = {**report, "seconds": math.nan}  # the third file (strict JSON) cannot be written
    with pytest.raises(ValueError):
        publish_card(broken, card, plot, results)
    assert entries(tmp_path) == before  # card and plot were written to temps, never renamed


def test_a_full_disk_exits_1_with_one_line_and_a_mistake_still_exits_2(capsys) -> None:
    def named(argv: list[str] | None) -> int:
        raise full_disk("/data/out.parquet")

    def unnamed(argv: list[str] | None) -> int:
        raise full_disk()

    def copied(argv: list[str] | None) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/src.onnx", None, "/m/x.onnx")

    def mistake(argv: list[str] | None) -> int:
        raise StageError("--input not found")

    assert run_main(named) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on device writing /data/out.parquet (")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert run_main(unnamed) == 1
    assert "the path was not reported: `df -h`" in capsys.readouterr().err
    assert run_main(copied) == 1
    assert "writing /m/x.onnx (" in capsys.readouterr().err  # where it went, not where from
    assert run_main(mistake) == 2
    assert capsys.readouterr().err == "error: --input not found\n"


def test_a_logged_full_disk_keeps_its_line_and_loses_its_traceback(capsys) -> None:
    setup_logging("INFO")
    log = logging.getLogger("mlflow.store.db.utils")
    try:
        raise OSError("(sqlite3.OperationalError) database or disk is full")
    except OSError:
        log.exception("SQLAlchemy database error")
    try:
        raise KeyError("other")
    except KeyError:
        logging.getLogger("elsewhere").exception("another error")
    err = capsys.readouterr().err
    assert "SQLAlchemy database error" in err and err.count("Traceback") == 1
