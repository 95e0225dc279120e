"""Ingestion end to end: real CLI, real hub-cache loading offline, rejects and atomic writes."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from financemath_mlops.config import load_settings
from financemath_mlops.ingestion import ingest
from tests.helpers import make_rows, run_module, write_json

SHA = "0123456789abcdef0123456789abcdef01234567"


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The ingestion CLI, exit code unchecked, bounded at 300 s (not run_module's 120)."""
    return run_module("ingestion", *args, cwd=cwd, timeout=300, **env)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def lay_out_hub_cache(root: Path, layout: str) -> Path:
    """A Hugging Face hub cache for yale-nlp/FinanceMath, as snapshot_download leaves it."""
    repo = root / ".cache" / "hf" / "hub" / "datasets--yale-nlp--FinanceMath"
    snapshot = repo / "snapshots" / SHA
    validation = make_rows(6, topic="Accounting")
    test = [dict(r, question_id=f"x-{i}", ground_truth=None) for i, r in enumerate(make_rows(4))]
    if layout == "json":
        write_json(snapshot / "validation.json", validation)
        write_json(snapshot / "test.json", test)
    else:
        (snapshot / "data").mkdir(parents=True)
        for split, rows in (("validation", validation), ("test", test)):
            pq.write_table(
                pa.Table.from_pylist(rows), snapshot / "data" / f"{split}-00000-of-00001.parquet"
            )
        (snapshot / "README.md").write_text(
            "---\nconfigs:\n- config_name: default\n  data_files:\n"
            "  - split: validation\n    path: data/validation-*\n"
            "  - split: test\n    path: data/test-*\n---\n# FinanceMath\n",
            encoding="utf-8",
        )
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA, encoding="utf-8")
    return snapshot


@pytest.mark.parametrize("layout", ["json", "parquet"])
def test_hf_source_reads_an_offline_hub_cache(tmp_path: Path, layout: str) -> None:
    lay_out_hub_cache(tmp_path, layout)
    done = run_cli("--source", "hf", "--split", "validation", cwd=tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "data" / "interim" / "financemath.jsonl")
    assert [r["question_id"] for r in records] == [f"t-{i}" for i in range(6)]
    assert {r["meta"]["revision"] for r in records} == {SHA}
    assert {r["meta"]["source"] for r in records} == {"hf"}
    assert records[0]["parsed_tables"][0]["rows"][0][1]["value"] == 5.0
    # The datasets Arrow cache lives under ./.cache/hf too, not in ~/.cache.
    assert (tmp_path / ".cache" / "hf" / "datasets").is_dir()

    done = run_cli("--source", "hf", "--split", "test", cwd=tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    test_records = read_jsonl(tmp_path / "data" / "interim" / "financemath.jsonl")
    assert len(test_records) == 4
    assert all(r["ground_truth"] is None for r in test_records)


def test_hf_source_unknown_split_fails_clearly(tmp_path: Path) -> None:
    lay_out_hub_cache(tmp_path, "json")
    done = run_cli("--source", "hf", "--split", "train", cwd=tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    assert "split 'train'" in done.stderr
    assert not (tmp_path / "data").exists()


def test_hf_source_without_cache_or_network_suggests_offline_sources(tmp_path: Path) -> None:
    done = run_cli("--source", "hf", cwd=tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    assert "--source sample" in done.stderr and "--source local" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_hf_token_is_never_printed(tmp_path: Path) -> None:
    done = run_cli(
        "--source", "hf", "--log-level", "DEBUG", cwd=tmp_path, HF_HUB_OFFLINE="1",
        HF_TOKEN="hf_secret_value_123",
    )  # fmt: skip
    assert "hf_secret_value_123" not in done.stdout + done.stderr


def test_corrupted_file_gives_rejects_with_reasons_and_counts_add_up(isolated_env: Path) -> None:
    good = make_rows(3)
    bad = [
        {"question_id": "m-1", "question": "Missing topic"},
        {"question_id": "nan-1", "question": "NaN answer", "topic": "Accounting",
         "ground_truth": float("nan")},
        dict(good[0]),  # duplicate id t-0
        {"question_id": 42, "question": "id is a number", "topic": "Accounting"},
        {"question_id": "t-9", "question": "tables not a list", "topic": "Accounting",
         "tables": "| a |"},
        {"question_id": "  ", "question": "blank id", "topic": "Accounting"},
        "not an object",
    ]  # fmt: skip
    path = isolated_env / "corrupt.json"
    path.write_text(json.dumps(good + bad, allow_nan=True), encoding="utf-8")
    settings = load_settings(overrides={"ingestion": {"source": "local", "path": path}})
    summary = ingest(settings.ingestion, settings.ingestion_output, settings.paths.hf_cache_dir)
    assert (summary.read, summary.written, summary.rejected) == (10, 3, 7)
    rejects = read_jsonl(summary.rejects_path)
    by_row = {r["row"]: r for r in rejects}
    assert "topic" in by_row[3]["reason"]
    assert "finite" in by_row[4]["reason"]
    assert by_row[4]["original"]["ground_truth"] == "nan"
    assert "duplicate question_id (first seen at row 0)" in by_row[5]["reason"]
    assert "question_id" in by_row[6]["reason"]
    assert "tables" in by_row[7]["reason"]
    assert "question_id" in by_row[8]["reason"]
    assert "not an object" in by_row[9]["reason"]
    assert summary.per_topic == {"Accounting": 3}


def test_jsonl_with_a_broken_line_rejects_that_line(isolated_env: Path) -> None:
    path = isolated_env / "rows.jsonl"
    lines = [json.dumps(r) for r in make_rows(2)] + ["{not json"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    given = load_settings(overrides={"ingestion": {"source": "local", "path": path}})
    summary = ingest(given.ingestion, given.ingestion_output, given.paths.hf_cache_dir)
    assert (summary.written, summary.rejected) == (2, 1)
    assert "not valid JSON" in read_jsonl(summary.rejects_path)[0]["reason"]


def test_parquet_local_file(isolated_env: Path) -> None:
    path = isolated_env / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(make_rows(4)), path)
    given = load_settings(overrides={"ingestion": {"source": "local", "path": path}})
    summary = ingest(given.ingestion, given.ingestion_output, given.paths.hf_cache_dir)
    assert (summary.read, summary.written, summary.rejected) == (4, 4, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps([{"foo": 1, "question": "q"}]), "missing columns ['question_id', 'topic']"),
        (json.dumps({"a": 1}), "expected a JSON array"),
        ("[{broken", "not valid JSON"),
    ],
)
def test_file_that_is_not_financemath_shaped_fails_and_writes_nothing(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "in.json").write_text(content, encoding="utf-8")
    done = run_cli("--source", "local", "--path", "in.json", cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "data").exists()


def test_missing_local_file_fails_clearly(tmp_path: Path) -> None:
    done = run_cli("--source", "local", "--path", "nope.json", cwd=tmp_path)
    assert done.returncode == 2
    assert "input file not found: nope.json" in done.stderr


def test_interrupted_write_leaves_no_output(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_json(isolated_env / "rows.json", make_rows(5))
    settings = load_settings(overrides={"ingestion": {"source": "local", "path": path}})
    output = settings.ingestion_output
    import financemath_mlops.ingestion.validate as validate

    original = validate.IngestedRecord.model_dump
    calls = {"n": 0}

    def dump_then_crash(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user hit Ctrl-C mid-write
        return original(self, *args, **kwargs)

    monkeypatch.setattr(validate.IngestedRecord, "model_dump", dump_then_crash)
    with pytest.raises(KeyboardInterrupt):
        ingest(settings.ingestion, settings.ingestion_output, settings.paths.hf_cache_dir)
    assert calls["n"] == 3
    assert not output.exists()
    assert list(output.parent.iterdir()) == []


def test_sample_source_cli_writes_every_row(tmp_path: Path) -> None:
    done = run_cli("--source", "sample", "--rows", "120", "--seed", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "read 120 = written 120 + rejected 0" in done.stdout
    records = read_jsonl(tmp_path / "data" / "interim" / "financemath.jsonl")
    assert len(records) == 120
    assert all(math.isfinite(r["ground_truth"]) for r in records)
    assert (tmp_path / "data" / "interim" / "financemath.rejects.jsonl").read_text() == ""


def test_real_validation_file_ingests_200_rows_and_no_rejects(
    shared_data: Path, isolated_env: Path
) -> None:
    settings = load_settings(
        overrides={"ingestion": {"source": "local", "path": shared_data / "validation.json"}}
    )
    summary = ingest(settings.ingestion, settings.ingestion_output, settings.paths.hf_cache_dir)
    assert (summary.read, summary.written, summary.rejected) == (200, 200, 0)
    assert len(summary.per_topic) == 7


def test_help_explains_sources(tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0
    for word in ("--source", "--path", "--config", "rejects", "FMOPS_INGESTION__SOURCE"):
        assert word in done.stdout
