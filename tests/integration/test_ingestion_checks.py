"""Ingestion refuses what it would ignore and reports what a later stage would trip over (issue 29).

In-process through the real CLI entry point (`run_main(main, argv)`), in a temp working folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from financemath_mlops.cli import run_main
from financemath_mlops.ingestion.__main__ import main
from tests.helpers import make_rows, write_json

OUTPUT = Path("data/interim/financemath.jsonl")
REJECTS = Path("data/interim/financemath.rejects.jsonl")
MANIFEST = Path("data/interim/financemath.manifest.json")


def ingest(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_main(main, list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def published() -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in (OUTPUT, REJECTS, MANIFEST)}


@pytest.fixture()
def good_set(isolated_env: Path, capsys: pytest.CaptureFixture[str]) -> dict[Path, bytes]:
    """A good 20-row set already published, as a user would have before a bad run."""
    write_json(Path("good.json"), make_rows(20))
    assert ingest(capsys, "--source", "local", "--path", "good.json")[0] == 0
    return published()


# --- "All rows rejected": exit 2, the previous set kept -----------------------------------------


def test_a_file_whose_every_row_is_rejected_exits_2_and_keeps_the_previous_set(
    good_set: dict[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [dict(row, ground_truth=str(row["ground_truth"])) for row in make_rows(150)]
    write_json(Path("bad.json"), bad)  # answers as numeric strings: every row rejected
    code, out, err = ingest(capsys, "--source", "local", "--path", "bad.json")
    assert code == 2
    assert "no valid row in bad.json: all 150 rows rejected (150 x ground_truth:" in err
    assert "unchanged" in err and "Traceback" not in err
    assert "written 0" not in out
    assert published() == good_set


def test_a_first_run_with_no_valid_row_leaves_nothing(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_json(Path("bad.json"), [{"question_id": 1, "question": "q", "topic": "Accounting"}])
    assert ingest(capsys, "--source", "local", "--path", "bad.json")[0] == 2
    assert not Path("data/interim").exists() or not any(Path("data/interim").iterdir())


# --- "Flags accepted and ignored" (ingestion) ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--source", "sample", "--path", "good.json"],
            "--path good.json does not apply to --source sample: --path is read by --source local",
        ),
        (
            ["--source", "local", "--path", "good.json", "--rows", "10"],
            "--rows 10 does not apply to --source local: --rows is read by --source sample only. "
            "A local file is read whole",
        ),
        (
            ["--source", "local", "--path", "good.json", "--seed", "3"],
            "--seed 3 does not apply to --source local",
        ),
        (
            ["--source", "sample", "--split", "test"],
            "--split test does not apply to --source sample: --split is read by --source hf only",
        ),
        (
            ["--source", "local", "--path", "good.json", "--revision", "v1"],
            "--revision v1 does not apply to --source local",
        ),
        (
            ["--path", "good.json", "--split", "test"],
            "--split test does not apply to --source local (which --path implies)",
        ),
        (
            ["--rows", "10"],
            "--rows 10 does not apply to source 'hf' (from the settings: ingestion.source): "
            "--rows is read by --source sample only. Use --source sample",
        ),
    ],
)
def test_a_flag_the_source_would_ignore_is_refused(
    good_set: dict[Path, bytes],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    code, _, err = ingest(capsys, *argv)
    assert code == 2
    assert message in err
    assert published() == good_set


def test_path_alone_means_the_local_source_not_the_hub(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_json(Path("rows.json"), make_rows(4))
    code, out, err = ingest(capsys, "--path", "rows.json")
    assert code == 0, err
    assert "read 4 = written 4 + rejected 0" in out
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["source"]["source"] == "local"
    assert manifest["source"]["dataset_id"] == "rows.json"


def test_help_says_which_flags_each_source_reads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--path without --source means --source local" in out
    assert "a flag of another source is refused (exit 2)" in out
    assert "no valid row exits 2" in out


# --- "Case and names" -----------------------------------------------------------------------


def test_topics_in_another_case_are_stored_as_financemath_spells_them(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = make_rows(3, topic="accounting") + [
        dict(r, question_id=f"r-{i}", topic="RISK  management") for i, r in enumerate(make_rows(2))
    ]
    write_json(Path("rows.json"), rows)
    code, out, err = ingest(capsys, "--path", "rows.json")
    assert code == 0, err
    records = [json.loads(line) for line in OUTPUT.read_text().splitlines()]
    assert [r["topic"] for r in records] == ["Accounting"] * 3 + ["Risk Management"] * 2
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["per_topic"] == {"Accounting": 3, "Risk Management": 2}
    assert manifest["unknown_topics"] == {}
    assert "unknown" not in out


def test_an_unknown_topic_is_counted_and_reported_with_its_rows(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = make_rows(3) + [dict(make_rows(1)[0], question_id=f"u-{i}", topic="Acounting")
                           for i in range(2)]  # fmt: skip
    write_json(Path("rows.json"), rows)
    code, out, err = ingest(capsys, "--path", "rows.json")
    assert code == 0, err
    assert (
        "warning: 2 rows have a topic that is none of FinanceMath's 7 (features score them as "
        "topic_other): 'Acounting' (2 rows; closest: 'Accounting')"
    ) in out
    assert "  Acounting      2  (unknown: scored as topic_other)" in out.splitlines()
    assert "'Acounting' (2 rows; closest: 'Accounting')" in err  # logged too
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["unknown_topics"] == {"Acounting": 2}
    assert manifest["per_topic"] == {"Accounting": 3, "Acounting": 2}


def test_a_misnamed_label_column_is_reported_with_the_expected_name(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = []
    for row in make_rows(6):
        row["answer"] = row.pop("ground_truth")
        rows.append(row)
    write_json(Path("rows.json"), rows)
    code, out, err = ingest(capsys, "--path", "rows.json")
    assert code == 0, err  # unlabelled rows are valid (a test split has none): reported, kept
    assert "labelled: 0 of 6 rows have ground_truth" in out
    assert "columns no stage reads (kept out of the output): 'answer' (6 rows)" in out
    assert (
        "no row has ground_truth (the label column): these rows can be scored, not trained on; "
        "if 'answer' holds the answers, rename it to ground_truth"
    ) in out
    assert "rename it to ground_truth" in err
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["counts"]["labelled"] == 0
    assert manifest["unknown_columns"] == {"answer": 6}


def test_a_miscased_column_is_reported_with_the_closest_real_name(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = make_rows(4)
    rows[0]["Ground_Truth"] = rows[0].pop("ground_truth")
    write_json(Path("rows.json"), rows)
    code, out, _ = ingest(capsys, "--path", "rows.json")
    assert code == 0
    assert "labelled: 3 of 4 rows have ground_truth" in out
    assert "'Ground_Truth' (1 row; did you mean ground_truth?)" in out
    assert "no row has ground_truth" not in out


def test_a_labelled_file_reports_its_labels_and_no_warning(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_json(Path("rows.json"), make_rows(5))
    code, out, _ = ingest(capsys, "--path", "rows.json")
    assert code == 0
    assert "labelled: 5 of 5 rows have ground_truth" in out
    assert "warning" not in out
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["counts"] == {"read": 5, "written": 5, "rejected": 0, "labelled": 5}
    assert manifest["unknown_columns"] == {}


def test_many_unknown_topics_are_listed_commonest_first_and_capped(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [dict(make_rows(1)[0], question_id=f"u-{i}", topic=f"Topic {i % 12}") for i in range(13)]
    write_json(Path("rows.json"), rows)
    code, out, _ = ingest(capsys, "--path", "rows.json")
    assert code == 0
    (note,) = [line for line in out.splitlines() if "none of FinanceMath's 7" in line]
    assert "13 rows have a topic" in note
    assert ": 'Topic 0' (2 rows)" in note and note.endswith(", and 2 more (see the manifest)")
    assert len(json.loads(MANIFEST.read_text())["unknown_topics"]) == 12


def test_many_long_unknown_columns_and_topics_keep_the_report_small(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29 review: 2,000 unlabelled rows with 20 made-up 200-character columns and a topic
    each printed an 8.6 MB summary line, 2,009 table lines and a 9 MB manifest. Now every listing
    is cut (run.py's module docstring states the bound) and the counts still add up."""
    rows = []
    for i, row in enumerate(make_rows(150)):
        row.pop("ground_truth")
        row |= {f"col-{i}-{j}-" + "c" * 200: 1 for j in range(3)}
        rows.append(dict(row, question_id=f"u-{i}", topic=f"topic-{i}-" + "t" * 200))
    rows[-1]["GroundTruth"] = 1  # close to the label's name: the one the no-label warning names
    write_json(Path("rows.json"), rows)
    code, out, err = ingest(capsys, "--path", "rows.json")
    assert code == 0, err
    assert len(out) < 20_000 and len(err) < 20_000
    assert len(out.splitlines()) < 25
    assert "  (140 more unknown topics: 140 rows)" in out.splitlines()
    (label,) = [line for line in out.splitlines() if "no row has ground_truth" in line]
    assert label.endswith("; if 'GroundTruth' holds the answers, rename it to ground_truth")
    (topics,) = [line for line in out.splitlines() if "none of FinanceMath's 7" in line]
    assert topics.endswith(", and 140 more (the manifest keeps the 100 with most rows)")
    assert "t" * 61 not in out and "c" * 61 not in out
    manifest_text = MANIFEST.read_text()
    assert len(manifest_text) < 32_000
    manifest = json.loads(manifest_text)
    for what, total in (("per_topic", 150), ("unknown_topics", 150), ("unknown_columns", 451)):
        kept, more = manifest[what], manifest[f"{what}_more"]
        assert len(kept) == 100 and max(map(len, kept)) <= 60
        assert sum(kept.values()) + more["rows"] == total
        assert len(kept) + more["names"] == total


def test_the_no_label_warning_names_three_unread_columns_when_none_is_close() -> None:
    from financemath_mlops.ingestion.stage import IngestionSummary

    columns = {name: 4 for name in ("notes", "extra", "misc", "source_url", "z")}
    summary = IngestionSummary(
        Path("o"), Path("r"), Path("m"), read=4, written=4, rejected=0, source="local",
        revision=None, unknown_columns=columns,
    )  # fmt: skip
    (note,) = [n for n in summary.warnings() if n.startswith("no row has")]
    assert note.endswith(
        "if one of 'extra', 'misc', 'notes' (+2 more) holds the answers, rename it to ground_truth"
    )
