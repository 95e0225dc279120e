"""The features stage on real files: output contract, embedding cache reuse, clear errors, a
manifest inside each table, and only ingested records (or rows the caller vouches for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from financemath_mlops.cli import run_main
from financemath_mlops.features.__main__ import main as features_main
from financemath_mlops.features.build import FeatureError, read_features
from financemath_mlops.features.rows import FEATURE_COLUMNS
from financemath_mlops.flows.stages import features_stage, ingest_stage
from financemath_mlops.predict.__main__ import main as predict_main
from tests.conftest import pipeline_settings
from tests.helpers import cli_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("features")
    settings = pipeline_settings(
        workdir, rows=80, seed=5, paths={"cache_dir": workdir / ".cache-emb"},
        features={"partition_rows": 30},
    )  # fmt: skip
    # Reuse the repo's exported ONNX bundle; keep the embedding cache private to this test.
    onnx_src = Path(__file__).resolve().parents[2] / ".cache" / "onnx"
    if onnx_src.is_dir():
        (workdir / ".cache-emb").mkdir()
        (workdir / ".cache-emb" / "onnx").symlink_to(onnx_src)
    ingest_stage(settings)
    first = features_stage(settings)
    return settings, first


def test_output_has_ids_topic_target_and_fixed_feature_order(built) -> None:
    settings, summary = built
    frame, manifest = read_features(settings.features_output)
    assert list(frame.columns[:3]) == ["question_id", "topic", "target"]
    assert list(frame.columns[3:]) == list(FEATURE_COLUMNS)
    assert manifest["columns"] == list(FEATURE_COLUMNS)
    assert manifest["embedding"]["backend"] == "onnx"
    assert manifest["data"]["source"] == "sample"
    assert summary.rows == len(frame) == 80
    norms = np.linalg.norm(frame[[c for c in FEATURE_COLUMNS if c.startswith("emb_")]], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    no_tables = frame["tbl_count"] == 0
    assert no_tables.any() and frame.loc[no_tables, "tbl_num_mean"].isna().all()


def test_rerun_on_unchanged_input_reuses_cached_embeddings(built) -> None:
    settings, first = built
    assert first.cache_misses == 80
    before = pd.read_parquet(settings.features_output)
    second = features_stage(settings)
    assert (second.cache_hits, second.cache_misses) == (80, 0)
    pd.testing.assert_frame_equal(before, pd.read_parquet(settings.features_output))


def with_manifest_of(source: Path, frame: pd.DataFrame, target: Path) -> Path:
    """``frame`` written with the manifest ``source`` carries (as if built that way)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from financemath_mlops.features.build import MANIFEST_KEY

    key = MANIFEST_KEY.encode()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(target, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({key: pq.ParquetFile(source).metadata.metadata[key]})
    return target


def test_feature_table_not_matching_its_manifest_is_refused(built, tmp_path: Path) -> None:
    settings, _ = built
    frame = pd.read_parquet(settings.features_output)
    dropped = with_manifest_of(
        settings.features_output, frame.drop(columns=["tbl_num_mean"]), tmp_path / "f.parquet"
    )
    with pytest.raises(FeatureError, match=r"does not match .*missing \['tbl_num_mean'\]"):
        read_features(dropped)
    fewer = with_manifest_of(settings.features_output, frame.head(40), tmp_path / "g.parquet")
    with pytest.raises(FeatureError, match="holds 40 rows but its manifest describes 80"):
        read_features(fewer)
    twice = pd.concat([frame.head(40), frame.head(40)]).head(80)
    repeated = with_manifest_of(settings.features_output, twice, tmp_path / "h.parquet")
    with pytest.raises(FeatureError, match="holds 40 question_ids more than once"):
        read_features(repeated)  # training never meets them as a ValueError


def test_two_tables_in_one_folder_each_describe_their_own_rows(
    built, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29: b built beside a (other records, other embedding settings) used to overwrite the
    one `feature_columns.json` of the folder, so training on a read b's embedding settings and
    b's records."""
    from financemath_mlops.features import embeddings
    from financemath_mlops.training.train import _params

    settings, _ = built
    other = tmp_path / "other" / "records.jsonl"
    ingest_stage(pipeline_settings(tmp_path, rows=30, seed=9, ingestion={"output": other}))
    folder = tmp_path / "tables"
    a, b = folder / "a.parquet", folder / "b.parquet"
    argv = ["--input", str(settings.ingestion_output), "--output", str(a)]
    assert run_main(features_main, argv) == 0, capsys.readouterr().err
    # b with another max_length. Only the manifest matters here: the embedder reuses the len-256
    # ONNX bundle, since exporting a len-16 one would take torch and most of a minute.
    real = embeddings.make_embedder
    monkeypatch.setattr(
        embeddings, "make_embedder", lambda *a, **kw: real(*a, **{**kw, "max_length": 256})
    )
    monkeypatch.setenv("FMOPS_FEATURES__EMBEDDING__MAX_LENGTH", "16")
    argv = ["--input", str(other), "--output", str(b)]
    assert run_main(features_main, argv) == 0, capsys.readouterr().err
    monkeypatch.delenv("FMOPS_FEATURES__EMBEDDING__MAX_LENGTH")
    capsys.readouterr()
    _, manifest_a = read_features(a)
    _, manifest_b = read_features(b)
    assert manifest_a["data"]["input"] == str(settings.ingestion_output)
    assert manifest_b["data"]["input"] == str(other)
    assert (manifest_a["rows"], manifest_b["rows"]) == (80, 30)
    assert (manifest_a["embedding"]["max_length"], manifest_b["embedding"]["max_length"]) == (
        256, 16,
    )  # fmt: skip
    # Training on a (it reads a's manifest: train.py read_features) logs a's settings, not b's.
    on_a = settings.model_copy(
        update={"training": settings.training.model_copy(update={"features": a})}
    )
    _, trained_on = read_features(on_a.training_features)
    params = _params(on_a.training, on_a.features, on_a.features_input, trained_on)
    assert params["embedding.max_length"] == 256
    assert params["data.source"] == manifest_a["data"]["source"]

    # A table from before manifests were inside: the folder's file is named, never trusted.
    legacy = folder / "legacy.parquet"
    pd.read_parquet(a).to_parquet(legacy)  # a rewrite by another tool drops the manifest too
    (folder / "feature_columns.json").write_text(json.dumps(manifest_b))
    with pytest.raises(FeatureError) as refused:
        read_features(legacy)
    assert str(legacy) in str(refused.value)
    assert str(folder / "feature_columns.json") in str(refused.value)
    assert "python -m financemath_mlops.features --output" in str(refused.value)
    code = run_main(features_main, ["manifest", str(a)])
    assert code == 0 and json.loads(capsys.readouterr().out) == manifest_a


@pytest.mark.parametrize("content", [None, ""])
def test_missing_or_empty_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, content: str | None
) -> None:
    source = tmp_path / "in.jsonl"
    if content is not None:
        source.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "financemath_mlops.features", "--input", str(source),
         "--output", str(tmp_path / "out.parquet")],
        env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert ("not found" if content is None else "is empty") in done.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_input_that_is_not_ingested_records_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"foo": 1}) + "\n")
    settings = pipeline_settings(tmp_path, features={"input": source})
    with pytest.raises(FeatureError, match="not an ingested record"):
        features_stage(settings, validated_elsewhere=True)


def test_raw_rows_are_refused_unless_the_caller_vouches_for_them(
    built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29: `features --input raw.jsonl` built labelled rows ingestion would reject (answers
    as numeric strings) and the table said nothing of where they came from."""
    settings, _ = built
    rows = [json.loads(line) for line in settings.ingestion_output.read_text().splitlines()][:25]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({**r, "ground_truth": str(r["ground_truth"])}) + "\n"
                           for r in rows))  # fmt: skip
    table = tmp_path / "raw.parquet"
    argv = ["--input", str(raw), "--output", str(table)]
    assert run_main(features_main, argv) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "raw.manifest.json") in err and "--validated-elsewhere" in err
    assert "python -m financemath_mlops.ingestion --source local --path" in err
    assert not table.exists()

    assert run_main(features_main, [*argv, "--validated-elsewhere"]) == 0
    assert "validated elsewhere (--validated-elsewhere)" in capsys.readouterr().out
    _, manifest = read_features(table)
    assert manifest["data"]["validated"] == "elsewhere"
    assert manifest["data"]["input"] == str(raw)

    # Ingested records edited afterwards are no longer what ingestion checked.
    edited = tmp_path / "ingested" / settings.ingestion_output.name
    ingest_stage(pipeline_settings(tmp_path, rows=20, seed=5, ingestion={"output": edited}))
    _, manifest = read_features(settings.features_output)
    assert manifest["data"]["validated"] == "ingestion"
    assert manifest["data"]["ingestion_manifest"] == str(
        settings.ingestion_output.with_name("financemath.manifest.json")
    )
    assert manifest["data"]["source"] == "sample"
    with edited.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(rows[0] | {"question_id": "added-later"}) + "\n")
    assert run_main(features_main, ["--input", str(edited), "--output", str(table)]) == 2
    err = capsys.readouterr().err
    assert "changed since ingestion wrote" in err
    assert str(edited.with_name("financemath.manifest.json")) in err


def test_a_duplicated_id_is_refused_by_the_features_stage(
    built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29: a duplicated id built a table, and training failed on it with a traceback."""
    settings, _ = built
    lines = settings.ingestion_output.read_text().splitlines()[:30]
    raw = tmp_path / "dup.jsonl"
    raw.write_text("\n".join([*lines, lines[3]]) + "\n")
    argv = ["--input", str(raw), "--output", str(tmp_path / "dup.parquet")]
    assert run_main(features_main, [*argv, "--validated-elsewhere"]) == 2
    err = capsys.readouterr().err
    assert f"question_id {json.loads(lines[3])['question_id']!r} appears more than once" in err
    assert not (tmp_path / "dup.parquet").exists()


def test_records_renamed_with_their_manifest_are_still_vouched_for(
    built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29 review: copying financemath.jsonl + its manifest to my.jsonl + my.manifest.json
    was refused with "KeyError: 'my.jsonl'"; the manifest vouches for content, not for a name."""
    from financemath_mlops.features.lineage import records_provenance

    settings, _ = built
    mine = tmp_path / "my.jsonl"
    mine.write_bytes(settings.ingestion_output.read_bytes())
    manifest = settings.ingestion_output.with_name("financemath.manifest.json")
    (tmp_path / "my.manifest.json").write_bytes(manifest.read_bytes())
    _, data = records_provenance(mine, validated_elsewhere=False)
    assert data["validated"] == "ingestion" and data["source"] == "sample"
    assert data["ingestion_manifest"] == str(tmp_path / "my.manifest.json")

    # Other records beside that manifest: refused in words, no exception name.
    other = tmp_path / "other.jsonl"
    other.write_text("".join(mine.read_text().splitlines(keepends=True)[:5]))
    (tmp_path / "other.manifest.json").write_bytes(manifest.read_bytes())
    argv = ["--input", str(other), "--output", str(tmp_path / "other.parquet")]
    assert run_main(features_main, argv) == 2
    err = capsys.readouterr().err
    assert "is none of the records" in err and "other.manifest.json lists: financemath.jsonl" in err
    assert "KeyError" not in err and "Traceback" not in err
    # The rejects file is listed in the manifest too, but never vouches for records.
    from financemath_mlops.atomic import file_sha256
    from financemath_mlops.features.lineage import _ingestion_source

    body = {"files": {"a.jsonl": {"sha256": "0" * 64}, "a.rejects.jsonl": {"sha256": "f" * 64}}}
    (tmp_path / "a.manifest.json").write_text(json.dumps(body))
    _, problem = _ingestion_source(tmp_path / "a.manifest.json", Path("x"), "b.jsonl", "f" * 64)
    assert problem == "it is the rejects file a.rejects.jsonl of x, not the records"
    assert (
        file_sha256(mine)
        == json.loads(manifest.read_text())["files"]["financemath.jsonl"]["sha256"]
    )


@pytest.mark.parametrize("stage", ["features", "predict"])
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "3"], "--workers 3 does not apply to the local executor ({stage}.executor)"),
        (["--dask-address", "tcp://h:8786"], "--dask-address tcp://h:8786 does not apply to"),
        (
            ["--executor", "dask", "--dask-address", "tcp://h:8786", "--workers", "3"],
            "--workers 3 does not apply to the scheduler at tcp://h:8786",
        ),
    ],
)
def test_a_dask_flag_the_executor_would_ignore_is_refused(
    isolated_env: Path,
    capsys: pytest.CaptureFixture[str],
    stage: str,
    flags: list[str],
    message: str,
) -> None:
    """Issue 29 review: features took --dask-address/--workers on the local executor and ignored
    them (predict refused them); both stages' CLIs now share executors.check_executor_flags."""
    main = {"features": features_main, "predict": predict_main}[stage]
    argv = ["--input", "in.jsonl", "--output", "out.parquet", *flags]
    assert run_main(main, argv) == 2
    assert message.format(stage=stage) in capsys.readouterr().err
    assert not list(isolated_env.iterdir())
